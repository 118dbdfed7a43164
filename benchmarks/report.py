"""Write a benchmark's figures as ``results/<name>.json`` and ``.md``, each naming the command that made it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
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


def commit() -> str:
    """The checked-out commit (with ``+dirty`` when the tree has uncommitted changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True)
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"


def cpu_name() -> str:
    """The processor's model name (Linux), else the architecture."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_results(
    name: str, command: str, figures: dict[str, Any], notes: list[str], results: Path = RESULTS
) -> None:
    """Figures as JSON (machine-readable) and as a Markdown table (for people), side by side, in ``results``
    (``benchmarks/results`` unless a caller, such as a study, names its own folder)."""
    meta = {"command": command, "commit": commit(), "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    meta["machine"] = f"{platform.machine()}, {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps({**meta, "figures": figures, "notes": notes}, indent=2) + "\n")
    lines = [f"# {name}", "", f"Command: `{command}`  ", f"Commit: {meta['commit']}  "]
    lines += [f"Measured: {meta['measured_at']} on {meta['machine']}", ""]
    lines += ["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in figures.items()), ""]
    lines += [f"- {note}" for note in notes]
    (results / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(f"{k:>36}: {v}" for k, v in figures.items()))
