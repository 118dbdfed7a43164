"""Job: validate one interaction-log file against the catalogue and land it in the lake (or refuse it)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.datastore import read_dataset
from services.lake import already_landed, land, landing, manifest
from services.settings import Settings
from services.validation import Outcome, Policy, batch_id, read_log, validate


def run(
    settings: Settings, run_id: str, path: Path, dataset: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Validate ``path``; land it when the bad-row fraction is within the threshold. Returns the summary.

    ``accepted`` is False when the batch was refused; then nothing was written and ``message`` says why.
    ``rows_landed`` is what this run added to the lake: 0 for a file already ingested, whose summary otherwise
    repeats the first one; ``seconds`` says where the time went. Validation runs outside the dataset's landing
    lock; the check against what landed, and the landing, run under it. Raises ``InputError`` for a file that
    cannot be validated at all.
    """
    name = dataset or settings.dataset
    _, items = read_dataset(settings, name)
    policy = Policy.from_settings(settings, now or datetime.now(UTC))
    started = time.perf_counter()
    raw = read_log(path)
    batch = batch_id(path)
    seconds = {"read": time.perf_counter() - started}
    outcome = validate(raw, policy, items["item_id"].tolist())
    accepted = outcome.bad_fraction <= policy.max_bad_fraction
    landed: dict[str, Any] = {"rows_landed": 0, "days": 0, "quarantine_path": None}
    started = time.perf_counter()
    with landing(settings, name):  # also clears what a killed ingest left, even when this batch is refused
        previous = manifest(settings, batch, name) if accepted else None
        if accepted and previous is None:
            outcome = without_landed_rows(settings, outcome, name)
            record = {"source": path.name, **counts(outcome)}
            landed = land(settings, outcome.clean, outcome.quarantine, batch, name, record)
    seconds |= {**outcome.seconds, "land": time.perf_counter() - started}
    figures = counts(outcome)
    if previous is not None:  # the figures of the first ingest, which the lake holds
        figures = {key: previous.get(key, value) for key, value in figures.items()}
        landed = {"rows_landed": 0, "days": 0, "quarantine_path": previous.get("quarantine_path")}
    return {
        "run_id": run_id,
        "dataset": name,
        "path": str(path),
        "batch": batch,
        "accepted": accepted,
        **figures,
        "already_ingested": previous is not None,
        "rows_landed": landed["rows_landed"],
        "days": landed["days"],
        "quarantine_path": landed["quarantine_path"],
        "message": message(figures, policy, accepted, previous),
        "seconds": {step: round(value, 3) for step, value in seconds.items()},
    }


def counts(outcome: Outcome) -> dict[str, Any]:
    """The figures of a batch's verdict, as the summary and the manifest give them."""
    return {
        "rows_in": outcome.rows_in,
        "rows_clean": len(outcome.clean),
        "rows_quarantined": len(outcome.quarantine),
        "duplicates_dropped": outcome.duplicates_dropped,
        "bad_fraction": round(outcome.bad_fraction, 6),
        "reasons": outcome.reasons,
    }


def message(figures: dict[str, Any], policy: Policy, accepted: bool, previous: dict[str, Any] | None) -> str:
    """One line on what happened to the batch."""
    if not accepted:
        top = ", ".join(f"{r} ({n})" for r, n in sorted(figures["reasons"].items(), key=lambda kv: -kv[1])[:3])
        return (
            f"refused: {figures['bad_fraction']:.1%} of rows are bad, above the threshold of "
            f"{policy.max_bad_fraction:.1%} (R2EC_INGEST_MAX_BAD_FRACTION); nothing was landed; most frequent: {top}"
        )
    if previous is not None:
        return f"nothing new landed: this file was ingested at {previous['ingested_at']} (batch {previous['batch']})"
    return f"landed {figures['rows_clean']} row(s)"


def without_landed_rows(settings: Settings, outcome: Outcome, dataset: str) -> Outcome:
    """Count clean rows that a landed batch already holds as duplicates instead of landing them twice."""
    already = already_landed(settings, outcome.clean, dataset)
    return Outcome(
        rows_in=outcome.rows_in,
        clean=outcome.clean[~already].reset_index(drop=True),
        quarantine=outcome.quarantine,
        duplicates_dropped=outcome.duplicates_dropped + int(already.sum()),
        reasons=outcome.reasons,
        seconds=outcome.seconds,
    )
