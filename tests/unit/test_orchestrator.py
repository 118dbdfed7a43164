"""What ``make demo`` echoes of Airflow's task logs: the message a person reads, without the log's framing."""

from __future__ import annotations

from services.orchestrator import readable


def test_a_structured_task_log_line_reads_as_its_message() -> None:
    line = (
        "2026-12-04T20:47:42.860592Z [info     ] ml-100k-1997-10-13.parquet: landed 124 row(s) (124 clean, "
        "0 quarantined) [services.jobs.pipeline] loc=pipeline.py:114\n"
    )
    assert readable(line) == "ml-100k-1997-10-13.parquet: landed 124 row(s) (124 clean, 0 quarantined)"
    failed = "2026-12-04T20:47:42Z [error    ] Task failed with exception [task] loc=task_runner.py:1"
    assert readable(failed) == "ERROR: Task failed with exception"
    assert readable("Traceback (most recent call last):\n") == "Traceback (most recent call last):"
