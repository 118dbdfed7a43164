"""Where training metrics go: a small interface the MLflow adapter implements, plus a JSON-lines file."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol


class MetricsLogger(Protocol):
    """Receives the run's parameters once and metrics at every logged step."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


class JsonlLogger:
    """Appends one JSON object per call to a file (kept next to the checkpoint)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def log_params(self, params: dict[str, Any]) -> None:
        self._write({"params": params})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._write({"step": step, **metrics})


class FanOutLogger:
    """Sends every call to several loggers (e.g. the JSON-lines file and MLflow)."""

    def __init__(self, *loggers: MetricsLogger) -> None:
        self.loggers = loggers

    def log_params(self, params: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step)


class PhaseLogger:
    """Prefixes every parameter and metric name with a training phase (``recpo.valid_ndcg@10``).

    One tracked run may hold several phases; their parameters differ and their steps restart at 0.
    """

    def __init__(self, logger: MetricsLogger, phase: str) -> None:
        self.logger, self.prefix = logger, f"{phase}."

    def log_params(self, params: dict[str, Any]) -> None:
        self.logger.log_params({f"{self.prefix}{key}": value for key, value in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.logger.log_metrics({f"{self.prefix}{key}": value for key, value in metrics.items()}, step)


class LogLinesLogger:
    """Metrics as ``logging`` lines, for logs that have no progress bar (an Airflow task log): every validation,
    and training steps at most every ``every_s`` seconds."""

    def __init__(self, logger: logging.Logger, label: str, every_s: float = 10.0) -> None:
        self.logger, self.label, self.every_s = logger, label, every_s
        self.started = self.last = time.monotonic()

    def log_params(self, params: dict[str, Any]) -> None:
        pass  # parameters go to the run's tracker; the log says what trains from the job's own lines

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = time.monotonic()
        validation = {key: value for key, value in metrics.items() if key.startswith("valid_")}
        if validation:
            shown = ", ".join(f"{key.removeprefix('valid_')} {value:.4f}" for key, value in validation.items())
            self.logger.info("%s: step %d, validation %s", self.label, step, shown)
        elif "loss" in metrics and now - self.last >= self.every_s:
            self.last = now
            self.logger.info("%s: step %d, loss %.4f, %.1f s/step, %.0f s so far", self.label, step,
                             metrics["loss"], metrics.get("step_s", float("nan")), now - self.started)  # fmt: skip
