"""Job: validate one interaction-log file against the catalogue and land it in the lake (or refuse it)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.datastore import read_dataset
from services.lake import already_landed, land
from services.settings import Settings
from services.validation import Outcome, Policy, batch_id, read_log, validate


def run(
    settings: Settings, run_id: str, path: Path, dataset: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Validate ``path``; land it when the bad-row fraction is within the threshold. Returns the summary.

    ``accepted`` is False when the batch was refused; then nothing was written and ``message`` says why.
    Raises ``InputError`` for a file that cannot be validated at all.
    """
    name = dataset or settings.dataset
    _, items = read_dataset(settings, name)
    policy = Policy.from_settings(settings, now or datetime.now(UTC))
    raw = read_log(path)
    batch = batch_id(path)
    outcome = validate(raw, policy, items["item_id"].tolist())
    accepted = outcome.bad_fraction <= policy.max_bad_fraction
    landed: dict[str, Any] = {"already_ingested": False, "days": 0, "quarantine_path": None}
    if accepted:
        outcome = without_landed_rows(settings, outcome, batch, name)
        landed = land(settings, outcome.clean, outcome.quarantine, batch, name)
    return {
        "run_id": run_id,
        "dataset": name,
        "path": str(path),
        "batch": batch,
        "accepted": accepted,
        "rows_in": outcome.rows_in,
        "rows_clean": len(outcome.clean),
        "rows_quarantined": len(outcome.quarantine),
        "duplicates_dropped": outcome.duplicates_dropped,
        "bad_fraction": round(outcome.bad_fraction, 6),
        "reasons": outcome.reasons,
        **landed,
        "message": "landed" if accepted else refusal_message(outcome.bad_fraction, policy, outcome.reasons),
    }


def refusal_message(fraction: float, policy: Policy, reasons: dict[str, int]) -> str:
    top = ", ".join(f"{reason} ({count})" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
    return (
        f"refused: {fraction:.1%} of rows are bad, above the threshold of {policy.max_bad_fraction:.1%} "
        f"(R2EC_INGEST_MAX_BAD_FRACTION); nothing was landed; most frequent: {top}"
    )


def without_landed_rows(settings: Settings, outcome: Outcome, batch: str, dataset: str) -> Outcome:
    """Count clean rows that another batch already landed as duplicates instead of landing them twice."""
    already = already_landed(settings, outcome.clean, batch, dataset)
    return Outcome(
        rows_in=outcome.rows_in,
        clean=outcome.clean[~already].reset_index(drop=True),
        quarantine=outcome.quarantine,
        duplicates_dropped=outcome.duplicates_dropped + int(already.sum()),
        reasons=outcome.reasons,
    )
