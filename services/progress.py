"""Progress of long jobs: a bar at a terminal, a ``logging`` line every few seconds elsewhere (Airflow task logs)."""

from __future__ import annotations

import logging
import time
from types import TracebackType

from tqdm.auto import tqdm


class Progress:
    """Counts done units of ``total``; shows a tqdm bar when ``bar`` is true, else logs at most every ``every_s``."""

    def __init__(
        self, total: int, desc: str, logger: logging.Logger, bar: bool, every_s: float = 10.0, unit: str = "it"
    ) -> None:
        self.total, self.desc, self.logger, self.every_s, self.unit = total, desc, logger, every_s, unit
        self.done = 0
        self.started = self.last_log = time.monotonic()
        self.bar = tqdm(total=total, desc=desc, unit=unit) if bar else None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last_log >= self.every_s or self.done >= self.total:
            self.last_log = now
            rate = self.done / max(now - self.started, 1e-9)
            self.logger.info("%s: %d/%d %s (%.2f %s/s)", self.desc, self.done, self.total, self.unit, rate, self.unit)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.close()
