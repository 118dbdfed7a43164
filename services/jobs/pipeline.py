"""What the Airflow DAGs need beyond one call of a job, as plain functions (tests reach them without Airflow).

``dags/`` stays glue: schedules, retries, assets, params, and one call into this module or another job per
task. Everything that decides something lives here:

- :func:`inbox_files` / :func:`ingest_interval`: which dropped log files belong to a data interval (by the
  ``YYYY-MM-DD`` in their name), and ingesting each of them;
- :func:`retrain`: continue the headline recipe from a registered version's checkpoint, register a challenger
  with its gate (idempotent for the run id: a retried task finds the version it registered);
- :func:`promote` / :func:`promote_trained`: move ``champion`` by hand (a failed gate needs ``force``) or
  after a retrain (only when asked and the gate passed);
- :func:`shards` and :func:`xcom_summary`: the nightly fan-out and the small part of a summary that goes into
  XCom.

:class:`Refused` marks what retrying cannot fix (a refused batch, a failed gate): the DAG fails the task at once
with the message instead of retrying.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from services.settings import Settings
from services.settings import load_settings as load_settings  # re-exported: DAGs import services.jobs only

log = logging.getLogger(__name__)

DAY_IN_NAME = re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2})(?!\d)")
LOG_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson")
TAG_TRAIN_RUN, TAG_TRAINED_FROM = "train_run_id", "trained_from"
PHASES = ("recpo", "contrastive", "contrastive,recpo")


class Refused(RuntimeError):
    """A request that retrying cannot fix (bad input, a failed gate); the message says why and what to do."""


# --- interactions_validate -------------------------------------------------------------------------------------


def day_of(path: Path) -> date | None:
    """The day a log file covers, read from the ``YYYY-MM-DD`` in its name; None when it has none."""
    match = DAY_IN_NAME.search(path.name)
    if match is None:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def inbox_files(settings: Settings, start: datetime, end: datetime, dataset: str | None = None) -> list[Path]:
    """Log files of ``<inbox>/<dataset>/`` whose day D (in the name) starts inside ``[start, end)`` (UTC).

    With the daily midnight interval that is exactly the files named for the interval's day. Hidden files
    (``.name``, e.g. a copy still being written) and files without a day in their name are left alone.
    """
    folder = settings.inbox(dataset)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        day = day_of(path)
        if path.name.startswith(".") or path.suffix.lower() not in LOG_SUFFIXES or not path.is_file() or not day:
            continue
        if start <= datetime.combine(day, time(), tzinfo=UTC) < end:
            found.append(path)
    return found


def catch_up_start(start: datetime, catch_up_from: str | None) -> datetime:
    """The interval's start, moved back to the day ``catch_up_from`` (``YYYY-MM-DD``) when one is given.

    A backlog of daily files (a first load, days the DAG was paused) then lands in one run instead of one run
    per day; each file is still its own batch, validated alone.
    """
    if not catch_up_from:
        return start
    try:
        day = datetime.combine(date.fromisoformat(str(catch_up_from).strip()), time(), tzinfo=UTC)
    except ValueError as error:
        raise Refused(f"catch_up_from must be a day YYYY-MM-DD, not {catch_up_from!r}") from error
    if day > start:
        raise Refused(f"catch_up_from {day:%Y-%m-%d} is after the interval's start {start:%Y-%m-%d}")
    return day


def ingest_interval(
    settings: Settings, run_id: str, start: datetime, end: datetime, dataset: str | None = None
) -> dict[str, Any]:
    """Validate and land every inbox file of the interval; each file is its own batch.

    Re-running an interval lands nothing twice (a batch is named by its bytes). Raises :class:`Refused`, after
    every file was tried, when one was refused (its message says why; it landed nothing) or unreadable.
    """
    from services.jobs import ingest
    from services.validation import InputError

    files = inbox_files(settings, start, end, dataset)
    results, refusals = [], []
    for path in files:
        try:
            summary = ingest.run(settings, run_id, path, dataset)
        except InputError as error:
            refusals.append(f"{path.name}: {error}")
            continue
        keys = ("batch", "accepted", "rows_in", "rows_clean", "rows_quarantined", "duplicates_dropped", "message")
        results.append({"file": path.name, **{key: summary[key] for key in keys}})
        if summary["accepted"]:
            log.info("%s: %s (%d clean, %d quarantined)", path.name, summary["message"], summary["rows_clean"],
                     summary["rows_quarantined"])  # fmt: skip
        else:
            refusals.append(f"{path.name}: {summary['message']}")
    if refusals:
        raise Refused("; ".join(refusals))
    return {
        "run_id": run_id,
        "dataset": dataset or settings.dataset,
        "interval": [start.isoformat(), end.isoformat()],
        "inbox": str(settings.inbox(dataset)),
        "files": len(files),
        "rows_clean": sum(r["rows_clean"] for r in results),
        "rows_quarantined": sum(r["rows_quarantined"] for r in results),
        "batches": results,
    }


# --- recpo_retrain and model_promote ---------------------------------------------------------------------------


def retrain(
    settings: Settings,
    run_id: str,
    base: str = "champion",
    phases: str = "recpo",
    max_minutes: float | None = None,
    max_steps: int | None = None,
    eval_samples: int | None = None,
    recipe: str | None = None,
) -> dict[str, Any]:
    """Continue the headline recipe (or ``recipe``) from ``base``'s checkpoint on the samples Feast's training
    feature service reads from the clean lake; register a challenger and gate it.

    ``base`` is an alias or a version number, resolved once. The new version is tagged with the run id and the
    version it was trained from; a retry with the same run id returns that version instead of training again.
    Never promotes (see :func:`promote_trained`).
    """
    from r2ec.training.recipes import HEADLINE, get_recipe
    from services import registry
    from services.jobs import model_admin

    done = registry.version_with_tag(settings, TAG_TRAIN_RUN, run_id)
    if done is not None:
        version = registry.resolve(settings, done)
        log.info("run %s already registered v%s; not training again", run_id, done)
        return {"run_id": run_id, "version": done, **_gate_of(version), "already_done": True}
    if phases not in PHASES:
        raise Refused(f"phases must be one of {', '.join(PHASES)}, not {phases!r}")
    chosen = (
        get_recipe(recipe or HEADLINE)
        .only(phases.split(","))
        .with_budget(max_minutes=max_minutes, max_steps=max_steps, eval_samples=eval_samples)
    )
    try:
        parent = registry.resolve(settings, base)
    except registry.RegistryError as error:
        raise Refused(f"base {base!r}: {error}") from error
    log.info("run %s: %s (%s) from v%s", run_id, chosen.label, phases, parent.version)
    quiet = settings.model_copy(update={"auto_promote": False})  # promotion is its own, visible step
    with registry.checkpoint_of(settings, parent) as checkpoint:
        try:
            summary = model_admin.train_and_register(
                quiet, run_id, chosen, init_checkpoint=checkpoint, samples_from="feast"
            )
        except ValueError as error:  # no clean log, rows outside the catalogue: retrying cannot help
            raise Refused(str(error)) from error
    version = str(summary["version"])
    registry.tag_version(settings, version, {TAG_TRAIN_RUN: run_id, TAG_TRAINED_FROM: str(parent.version)})
    metric = f"valid_{settings.gate_metric}"
    return {
        "run_id": run_id,
        "version": version,
        "trained_from": str(parent.version),
        "recipe": chosen.label,
        "phases": phases,
        "gate": summary["gate"],
        "gate_detail": summary["gate_detail"],
        metric: summary.get(metric),
        "mlflow_run_id": summary["mlflow_run_id"],
        "samples_from": summary["samples_from"],
        "train_samples": summary["train_samples"],
        "train_wall_s": summary["train_wall_s"],
    }


def _gate_of(version: Any) -> dict[str, Any]:
    from services import registry

    return {
        "gate": version.tags.get(registry.TAG_GATE, "-"),
        "gate_detail": version.tags.get(registry.TAG_GATE_DETAIL, ""),
        "trained_from": version.tags.get(TAG_TRAINED_FROM),
    }


def promote(settings: Settings, run_id: str, version: str, force: bool = False) -> dict[str, Any]:
    """Move ``champion`` to ``version`` (a number or an alias); a version whose gate failed needs ``force``."""
    from services import registry

    try:
        target = registry.resolve(settings, str(version).strip())
    except registry.RegistryError as error:
        raise Refused(str(error)) from error
    gate = _gate_of(target)
    if gate["gate"] == "failed" and not force:
        raise Refused(
            f"v{target.version} failed its gate ({gate['gate_detail']}); champion unchanged. "
            "Trigger model_promote with force=true to promote it anyway."
        )
    moved = registry.promote(settings, str(target.version))
    log.info("run %s: champion v%s (was v%s)%s", run_id, moved["champion"], moved["previous"],
             " forced past a failed gate" if gate["gate"] == "failed" else "")  # fmt: skip
    return {"run_id": run_id, **moved, "gate": gate["gate"], "forced": bool(force and gate["gate"] == "failed")}


def promote_trained(settings: Settings, run_id: str, trained: dict[str, Any], auto_promote: bool) -> dict[str, Any]:
    """After :func:`retrain`: promote its version when ``auto_promote`` is on and the gate passed.

    Returns ``promoted`` False with the ``reason`` otherwise (the DAG then skips its champion event).
    """
    version = str(trained["version"])
    if not auto_promote:
        return {"run_id": run_id, "promoted": False, "reason": f"auto_promote is off: v{version} stays challenger"}
    if trained.get("gate") != "passed":
        reason = f"v{version} did not pass its gate ({trained.get('gate_detail', '')}); champion unchanged"
        return {"run_id": run_id, "promoted": False, "reason": reason}
    return {"promoted": True, **promote(settings, run_id, version)}


# --- recommend_nightly ---------------------------------------------------------------------------------------


def shards(count: int) -> list[list[int]]:
    """The nightly run's shards ``[[0, n], [1, n], ...]``: one mapped task each (users split by a stable hash)."""
    if not 1 <= int(count) <= 256:
        raise Refused(f"shards must lie in 1..256, not {count}")
    return [[index, int(count)] for index in range(int(count))]


def night_as_of(as_of: str | None, scheduled: datetime | None) -> datetime:
    """The time a nightly run reads histories as of: ``as_of`` (ISO-8601, naive = UTC) when given, else the
    run's own time."""
    if not as_of:
        return as_utc(scheduled)
    try:
        return as_utc(datetime.fromisoformat(str(as_of).strip()))
    except ValueError as error:
        raise Refused(f"as_of must be an ISO-8601 time such as 1998-04-23T00:00:00Z, not {as_of!r}") from error


def xcom_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The scalar part of a job's summary (ids, counts, versions, times as text): what a DAG keeps in XCom."""
    small: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, datetime):
            small[key] = value.isoformat()
        elif value is None or isinstance(value, str | int | float | bool):
            small[key] = value
    return small


def as_utc(value: datetime | None) -> datetime:
    """A timezone-aware UTC time (Airflow hands pendulum or naive datetimes around)."""
    value = value or datetime.now(UTC)
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value.timestamp(), UTC)
