"""How the command line and ``make demo`` print a job's summary for a person."""

from __future__ import annotations

from typing import Any


def format_result(result: dict[str, Any]) -> str:
    """Human-readable rendering: metric blocks as a table, the rest as key: value lines."""
    lines = []
    metric_blocks = {k: v for k, v in result.items() if isinstance(v, dict) and "ndcg@10" in v}
    for key, value in result.items():
        if key not in metric_blocks and not isinstance(value, dict):
            lines.append(f"{key:>14}: {value}")
    if metric_blocks:
        names = [k for k in next(iter(metric_blocks.values())) if k != "n"]
        lines.append(f"{'split':>14}  {'n':>6}  " + "  ".join(f"{n:>8}" for n in names))
        for block, metrics in metric_blocks.items():
            row = "  ".join(f"{metrics[n]:8.4f}" for n in names)
            lines.append(f"{block:>14}  {metrics.get('n', ''):>6}  {row}")
    return "\n".join(lines)
