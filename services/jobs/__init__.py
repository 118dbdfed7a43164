"""Jobs: plain functions ``run(settings, ...) -> summary`` that the CLI and the DAGs both call."""
