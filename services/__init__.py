"""Adapters to the outside world (one per system), the jobs that use them, and the CLI."""
