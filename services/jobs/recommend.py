"""Job: the nightly recommendations: every selected user's rationale and top-K items, published atomically.

One run, under one run id:

1. resolve ``champion`` to a version once and record it; make sure alias ``items`` serves that version's item
   vectors (refresh the index first when it does not), so a promotion takes effect on the next run by itself;
2. each user's history as of the run time from Feast's scoring service (the point-in-time path of training);
   a user with no history before the run time gets status ``no_history``;
3. per chunk of users: batched reasoning and user vectors (``r2ec.inference``), top-K from the item collection
   with every item the user already interacted with excluded, rows written under the run id (a retried chunk
   replaces its own rows; a resumed run skips users already written);
4. checks (K distinct items per scored user, ranks 1..K, finite scores, every selected user once) and rationale
   quality (a run of mostly degenerate rationales is refused), then one transaction publishes the run and
   supersedes the previous one.

Shards (``shard=(i, n)``) split the selected users by a stable hash of the user id; each shard writes its users
and :func:`publish` publishes the run once all shards are written.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from services import features, registry, vectors
from services.datastore import read_dataset
from services.jobs import index_refresh
from services.jobs.resources import inference_model
from services.lake import read_clean_log
from services.progress import Progress
from services.recstore import RankedItem, RecStore, UserResult
from services.settings import Settings

log = logging.getLogger(__name__)


class RunRefused(RuntimeError):
    """The run was scored but not published (checks or rationale quality failed); the published run is unchanged."""


def shard_of(user_id: str, n_shards: int) -> int:
    """Stable shard of a user (the same on every machine and Python process)."""
    return zlib.crc32(user_id.encode()) % n_shards


def select_users(spec: str, known: Sequence[str]) -> list[str]:
    """``all``, the first ``N`` users by id, or the users listed in a file (one id per line); sorted, unique.

    An unknown id in a file is an error (``ValueError``, one line) rather than a silently skipped user.
    """
    ordered = sorted(set(known))
    if spec == "all":
        return ordered
    if spec.isdigit():
        if int(spec) < 1:
            raise ValueError("--users N needs N >= 1")
        return ordered[: int(spec)]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"--users takes 'all', a number or a file of user ids; {spec!r} is none of them")
    wanted = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    known_set = set(ordered)
    for number, user in enumerate(wanted, start=1):
        if user not in known_set:
            raise ValueError(f"{path}:{number}: unknown user {user!r} (not in the clean interaction log)")
    if not wanted:
        raise ValueError(f"{path}: no user ids in the file")
    return sorted(set(wanted))


def run(
    settings: Settings,
    run_id: str,
    users: str = "all",
    shard: tuple[int, int] | None = None,
    top_k: int | None = None,
    as_of: datetime | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Score the selected users (or one shard of them) under ``run_id``; publish when not sharded.

    Idempotent per run id: users already written are skipped, a published run is returned as it is.
    Raises ``RegistryError`` (no champion), ``ValueError`` (bad selection or catalogue) and :class:`RunRefused`.
    """
    started = time.perf_counter()
    if shard is not None and as_of is None:
        raise ValueError("a sharded run needs an explicit as-of time (--as-of), the same for every shard")
    as_of = as_of or datetime.now(UTC)
    k = top_k or settings.recommend_top_k
    n_shards, shard_index = shard[1] if shard else 1, shard[0] if shard else 0
    if not 0 <= shard_index < n_shards:
        raise ValueError(f"shard {shard_index}/{n_shards}: the index must lie in 0..{n_shards - 1}")

    _, items = read_dataset(settings, dataset)
    if items.empty:
        raise ValueError("the catalogue is empty: nothing to recommend")
    log_all = read_clean_log(settings, dataset)
    selected = select_users(users, log_all["user_id"].astype(str).unique())
    clean = log_all[log_all["event_time"] < pd.Timestamp(as_of)]
    mine = [u for u in selected if shard_of(u, n_shards) == shard_index]

    store = RecStore.from_settings(settings)
    store.upgrade()
    existing = store.get_run(run_id)
    if existing is not None and existing["status"] in ("published", "superseded"):
        log.info("run %s is already %s; nothing to do", run_id, existing["status"])
        return {"run_id": run_id, **existing, "already_done": True}

    version = registry.resolve(settings, registry.CHAMPION)
    index = index_refresh.run(settings, run_id, str(version.version), dataset)
    store.start_run(
        run_id,
        model_name=settings.registry_model_name,
        model_version=str(version.version),
        item_collection=index["collection"],
        feature_snapshot=as_of,
        top_k=k,
        n_shards=n_shards,
    )
    log.info(
        "run %s: model %s v%s, collection %s, %d of %d users in shard %d/%d",
        run_id, settings.registry_model_name, version.version, index["collection"], len(mine), len(selected),
        shard_index, n_shards,
    )  # fmt: skip
    try:
        plan = RunPlan(run_id, version, index["collection"], shard_index, k, as_of)
        catalogue = Catalogue(items)
        scored = _score(settings, store, plan, catalogue, clean, mine)
    except Exception as error:
        store.fail_run(run_id, f"shard {shard_index}/{n_shards}: {type(error).__name__}: {error}")
        raise
    summary = {
        "run_id": run_id,
        "model_version": str(version.version),
        "item_collection": index["collection"],
        "as_of": as_of.isoformat(),
        "shard": f"{shard_index}/{n_shards}",
        **scored,
        "seconds": round(time.perf_counter() - started, 1),
    }
    summary["users_per_s"] = round(scored["users_scored"] / max(scored["scoring_s"], 1e-9), 3)
    if shard is None:
        summary["published"] = _publish(settings, store, run_id, set(selected), catalogue, summary)
    return summary


class Catalogue:
    """The items a run recommends: id <-> catalogue index, titles and genres by index."""

    def __init__(self, items: pd.DataFrame) -> None:
        self.items = items
        self.ids = items["item_id"].astype(str).to_numpy()
        self.index = {item_id: i for i, item_id in enumerate(self.ids)}
        self.titles = items["title"].astype(str).to_numpy()
        genres = items["genres"] if "genres" in items else pd.Series([""] * len(items))
        self.genres = genres.fillna("").astype(str).to_numpy()

    def indices(self, item_ids: Sequence[str], keep_order: bool = False) -> list[int]:
        """Catalogue indices of the ids still in the catalogue (an item removed since it was logged is skipped),
        in the given order, or sorted and unique."""
        found = [self.index[i] for i in item_ids if i in self.index]
        return found if keep_order else sorted(set(found))

    def genres_of(self, indices: Sequence[int]) -> list[str]:
        """The distinct genres of these items (the catalogue separates them with ``|``)."""
        return sorted({genre for i in indices for genre in self.genres[i].split("|") if genre})


@dataclass(frozen=True)
class RunPlan:
    """What a run resolved once at its start and uses throughout."""

    run_id: str
    version: Any  # the registry's ModelVersion behind champion
    collection: str  # the item collection (not the alias): a refresh mid-run cannot mix two indexes
    shard_index: int
    top_k: int
    as_of: datetime


def _score(
    settings: Settings, store: RecStore, plan: RunPlan, catalogue: Catalogue, clean: pd.DataFrame, users: list[str]
) -> dict[str, Any]:
    """Score and write ``users`` not yet written for the run, chunk by chunk; returns counts and the time split."""
    done = store.done_users(plan.run_id)
    todo = [u for u in users if u not in done]
    seconds = dict.fromkeys(("features", "generation", "vectors", "fluency", "retrieval", "writing"), 0.0)
    counts = {"users_scored": 0, "users_skipped": 0, "users_resumed": len(users) - len(todo)}
    if not todo:
        return {**counts, "scoring_s": 0.0, "time_split_s": seconds}
    seen = clean.groupby(clean["user_id"].astype(str))["item_id"].agg(catalogue.indices)
    with registry.checkpoint_of(settings, plan.version) as checkpoint:
        recommender = inference_model(settings, checkpoint)
    recommender.use_catalogue(catalogue.items)
    scoring_started = time.perf_counter()
    histories = features.scoring_features(settings, todo, plan.as_of).set_index("user_id", drop=False)
    seconds["features"] = time.perf_counter() - scoring_started
    client = vectors.connect(settings)
    try:
        with Progress(len(todo), f"recommend {plan.run_id}", log, settings.show_progress, unit="users") as progress:
            for start in range(0, len(todo), settings.recommend_chunk_users):
                chunk = todo[start : start + settings.recommend_chunk_users]
                frame = histories.loc[chunk].reset_index(drop=True)
                results = _score_chunk(settings, recommender, client, plan, catalogue, frame, seen, seconds)
                tick = time.perf_counter()
                store.write_users(plan.run_id, plan.shard_index, [results[u] for u in chunk], datetime.now(UTC))
                seconds["writing"] += time.perf_counter() - tick
                scored = sum(result.status == "scored" for result in results.values())
                counts["users_scored"] += scored
                counts["users_skipped"] += len(chunk) - scored
                progress.update(len(chunk))
    finally:
        client.close()
    return {
        **counts,
        "scoring_s": round(time.perf_counter() - scoring_started, 1),
        "time_split_s": {phase: round(value, 1) for phase, value in seconds.items()},
    }


def _score_chunk(
    settings: Settings,
    recommender: Any,
    client: Any,
    plan: RunPlan,
    catalogue: Catalogue,
    frame: pd.DataFrame,
    seen: pd.Series,
    seconds: dict[str, float],
) -> dict[str, UserResult]:
    """One chunk of users' features -> reasoning, vectors, top-K (seen items excluded) -> one result per user."""
    from r2ec.inference import read_users, samples_from_histories

    all_histories = [catalogue.indices(ids, keep_order=True) for ids in frame["history_item_ids"]]
    known = np.array([len(h) > 0 for h in all_histories], dtype=bool)
    no_history = f"no history served as of {plan.as_of.isoformat()} (none before it within the features' ttl)"
    results = {u: UserResult(u, "no_history", [], "", [], detail=no_history) for u in frame["user_id"][~known]}
    if not known.any():
        return results
    rows = frame[known]
    histories = [h for h, ok in zip(all_histories, known, strict=True) if ok]
    samples = samples_from_histories(
        rows["user_id"].tolist(),
        histories,
        list(rows["history_ratings"]),
        list(rows["history_times"]),
        [int(plan.as_of.timestamp())] * len(rows),
        settings.max_history,
    )
    readout = read_users(recommender, samples)
    for phase, value in readout.rollouts.seconds.items():
        seconds[phase] += value
    fluency = np.full(len(rows), np.nan)
    n_fluent = min(settings.rationale_fluency_users, len(rows)) if recommender.config.reasoning else 0
    if recommender.config.reasoning_writer == "backbone" and readout.rollouts.mean_logprob is not None:
        fluency = np.asarray(readout.rollouts.mean_logprob)  # the backbone wrote it: its own likelihood, for free
    elif n_fluent:
        tick = time.perf_counter()
        fluency[:n_fluent] = recommender.backbone_log_likelihood(_head(readout.rollouts, n_fluent))
        seconds["fluency"] += time.perf_counter() - tick
    tick = time.perf_counter()
    exclude = [seen[u] for u in rows["user_id"]]
    ids, scores = vectors.top_k(client, plan.collection, readout.vectors, exclude, plan.top_k, settings.qdrant_exact)
    seconds["retrieval"] += time.perf_counter() - tick
    shown_items = recommender.config.prompts.history_items
    for row, user in enumerate(rows["user_id"]):
        shown = histories[row][-shown_items:]
        results[user] = UserResult(
            user_id=user,
            status="scored",
            history=[{"item_id": catalogue.ids[i], "title": catalogue.titles[i]} for i in shown],
            rationale=readout.rationales[row],
            items=[
                RankedItem(rank + 1, catalogue.ids[i], catalogue.titles[i], float(score))
                for rank, (i, score) in enumerate(zip(ids[row], scores[row], strict=True))
                if i >= 0
            ],
            stopped=readout.stopped[row],
            fluency=None if np.isnan(fluency[row]) else float(fluency[row]),
        )
    return results


def _head(rollouts: Any, n: int) -> Any:
    """The first ``n`` rows of a Rollouts (fluency is measured on a sample of each chunk)."""
    return replace(
        rollouts,
        input_ids=rollouts.input_ids[:n],
        attention_mask=rollouts.attention_mask[:n],
        completion_mask=rollouts.completion_mask[:n],
        rationales=rollouts.rationales[:n],
        stopped=rollouts.stopped[:n],
        vectors=None,
    )


def publish(
    settings: Settings,
    run_id: str,
    users: str = "all",
    dataset: str | None = None,
    timing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check a fully written run (all shards), measure its rationales, and publish it in one transaction.

    Raises :class:`RunRefused` (the run is marked failed, the published run stays) when a check fails or more
    rationales are degenerate than ``rationale_max_degenerate_share`` allows.
    """
    store = RecStore.from_settings(settings)
    store.upgrade()
    run_row = store.get_run(run_id)
    if run_row is None:
        raise ValueError(f"no recommendation run {run_id!r} to publish")
    if run_row["status"] in ("published", "superseded"):
        return run_row
    expected = set(select_users(users, read_clean_log(settings, dataset)["user_id"].astype(str).unique()))
    return _publish(settings, store, run_id, expected, Catalogue(read_dataset(settings, dataset)[1]), timing)


def _publish(
    settings: Settings,
    store: RecStore,
    run_id: str,
    expected: set[str],
    catalogue: Catalogue,
    timing: dict[str, Any] | None,
) -> dict[str, Any]:
    """Checks, rationale quality and the one-transaction publish of a written run (see :func:`publish`)."""
    from r2ec.evaluation.rationales import rationale_quality

    problems = store.check_run(run_id, expected)
    scored = [u for u in store.run_users(run_id) if u["status"] == "scored"]
    quality = rationale_quality(
        [u["rationale"] for u in scored],
        [bool(u["stopped"]) for u in scored],
        [[h["title"] for h in u["history"]] for u in scored],
        [catalogue.genres_of(catalogue.indices([h["item_id"] for h in u["history"]])) for u in scored],
        [u["fluency"] for u in scored if u["fluency"] is not None] or None,
    )
    if quality.get("degenerate_share", 0.0) > settings.rationale_max_degenerate_share:
        problems.append(
            f"{quality['degenerate_share']:.0%} of rationales are degenerate, above "
            f"R2EC_RATIONALE_MAX_DEGENERATE_SHARE={settings.rationale_max_degenerate_share:.0%}"
        )
    if problems:
        store.fail_run(run_id, "; ".join(problems))
        raise RunRefused(f"run {run_id} not published: " + "; ".join(problems[:5]))
    published = store.publish(run_id, {"rationale_quality": quality, **(timing or {})})
    log.info("run %s published: %s", run_id, quality)
    return {"status": published["status"], "rationale_quality": quality}
