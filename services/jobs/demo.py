"""Job behind ``make demo``: the main pipeline end to end on embedded defaults (no servers)."""

from __future__ import annotations

from collections.abc import Callable

from services.formatting import format_result
from services.jobs import evaluate, prepare_data
from services.settings import Settings


def run(settings: Settings, echo: Callable[[str], None] = print) -> None:
    """Prepare the default dataset, then fit and evaluate every baseline."""
    echo("== data")
    echo(format_result(prepare_data.run(settings, "demo")))
    for model in evaluate.BASELINES:
        echo(f"== {model}")
        echo(format_result(evaluate.run(settings, f"demo-{model}", model)))
