"""Write a benchmark's figures as ``results/<name>.json`` and ``.md``, each naming the command that made it."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def invocation(module: str) -> str:
    """The command line that ran ``module`` with this process's arguments, with ``R2EC_DTYPE`` first where it is set
    (it changes the scores, so a result's command must carry it)."""
    dtype = f"R2EC_DTYPE={os.environ['R2EC_DTYPE']} " if "R2EC_DTYPE" in os.environ else ""
    return f"{dtype}.venv/bin/python -m {module} {' '.join(sys.argv[1:])}".strip()


def write_results(
    name: str, command: str, figures: dict[str, Any], notes: list[str], results: Path = RESULTS
) -> None:
    """Figures as JSON (machine-readable) and as a Markdown table (for people), side by side, in ``results``
    (``benchmarks/results`` unless a caller, such as a study, names its own folder)."""
    meta = {"command": command, "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    meta["machine"] = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps({**meta, "figures": figures, "notes": notes}, indent=2) + "\n")
    lines = [f"# {name}", "", f"Command: `{command}`  ", f"Measured: {meta['measured_at']} on {meta['machine']}", ""]
    lines += ["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in figures.items()), ""]
    lines += [f"- {note}" for note in notes]
    (results / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(f"{k:>36}: {v}" for k, v in figures.items()))
