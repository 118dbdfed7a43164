"""Every DAG run end to end with ``dag.test()`` on the embedded world and a tiny model (tests/service_world.py):
each test asserts what the run changed (rows landed, features loaded, a version registered and gated, champion
moved, the item collection switched, a run published), not only that its tasks succeeded.

The tests share one world and run in file order, like the DAGs do in a night: land a day, refresh features,
retrain, promote, reindex, recommend; then a promotion made in the MLflow UI reaches the next nightly run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from r2ec.data.samples import prepare
from services import features, registry, vectors
from services.datastore import read_dataset
from services.jobs import index_refresh, model_admin, pipeline
from services.lake import read_clean_log
from services.recstore import RecStore
from services.settings import Settings, load_settings
from tests.dags.conftest import asset_events, run_dag, task_states, try_numbers, xcom
from tests.service_world import build_world, perturbed_copy

INTERACTIONS, CHAMPION = "r2ec://lake/interactions", "r2ec://registry/champion"
RECOMMENDATIONS = "r2ec://recstore/recommendations"
NEW_USER = "u-new"
K = 5


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path, airflow_home: Path) -> Iterator[Settings]:
    """The tiny world, and the environment the tasks' ``load_settings()`` reads pointing at it."""
    home = tmp_path_factory.mktemp("dag-world")
    env = {
        "R2EC_HOME": str(home),
        "R2EC_DATASET": "synthetic",
        "R2EC_PROGRESS": "false",
        "R2EC_GATE_SAMPLES": "16",
        "R2EC_RECOMMEND_CHUNK_USERS": "8",
        "R2EC_RECOMMEND_TOP_K": str(K),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        build_world(home, tiny_cache, gate_samples=16)
        yield load_settings()


def day_log(day: str, rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"user_id": u, "item_id": i, "event_time": f"{day}T{t}Z", "rating": r} for u, i, t, r in rows])


def good_day(day: str) -> pd.DataFrame:
    """A new user's first six interactions, and two more of existing users, all on ``day``."""
    rows = [(NEW_USER, f"i{10 + n}", f"0{n}:00:00", 4.0) for n in range(6)]
    rows += [("u1", "i50", "10:00:00", 5.0), ("u2", "i51", "11:00:00", 3.0)]
    return day_log(day, rows)


def mostly_bad_day(day: str) -> pd.DataFrame:
    """Distinct rows, 15 of 20 with items the catalogue does not have: far above the 5 % threshold."""
    rows = [("u3", f"no-such-item-{n}", f"0{n % 10}:{n:02d}:00", 4.0) for n in range(15)]
    rows += [("u3", f"i{60 + n}", f"12:0{n}:00", 4.0) for n in range(5)]
    return day_log(day, rows)


def drop(settings: Settings, frame: pd.DataFrame, name: str) -> Path:
    inbox = settings.inbox()
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
    return path


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def manifests(settings: Settings) -> set[str]:
    return {p.stem for p in (settings.lake_dir() / "batches").glob("*.json")}


def quarantined(settings: Settings) -> set[str]:
    return {p.stem for p in (settings.lake_dir() / "quarantine").glob("*.parquet")}


# --- interactions_validate ---------------------------------------------------------------------------------------


def test_interactions_validate_lands_the_file_of_its_day(world: Settings, dagbag: Any) -> None:
    before, events = len(read_clean_log(world)), asset_events(INTERACTIONS)
    drop(world, good_day("2024-06-01"), "ratings-2024-06-01.csv")
    drop(world, good_day("2024-06-02"), "ratings-2024-06-02.csv")  # the next day's file waits for its own run

    run = run_dag(dagbag, "interactions_validate", logical_date=at("2024-06-02"))  # interval: June 1

    assert task_states(run) == {"ingest": "success"}
    assert (run.data_interval_start, run.data_interval_end) == (at("2024-06-01"), at("2024-06-02"))
    summary = xcom(run, "ingest")
    assert (summary["files"], summary["rows_clean"], summary["rows_quarantined"]) == (1, 8, 0)
    log = read_clean_log(world)
    assert len(log) == before + 8
    assert set(log.loc[log["user_id"] == NEW_USER, "event_time"].dt.strftime("%Y-%m-%d")) == {"2024-06-01"}
    assert asset_events(INTERACTIONS) == events + 1

    again = run_dag(dagbag, "interactions_validate", logical_date=at("2024-06-02"))  # the same day again
    assert task_states(again) == {"ingest": "success"} and len(read_clean_log(world)) == before + 8


def test_a_day_without_a_file_is_skipped_without_an_asset_event(world: Settings, dagbag: Any) -> None:
    events = asset_events(INTERACTIONS)
    run = run_dag(dagbag, "interactions_validate", logical_date=at("2024-05-20"))
    assert task_states(run) == {"ingest": "skipped"}
    assert asset_events(INTERACTIONS) == events


def test_a_refused_file_fails_its_day_with_the_reason_and_the_next_day_goes_through(
    world: Settings, dagbag: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    before, events, batches, held = (
        len(read_clean_log(world)),
        asset_events(INTERACTIONS),
        manifests(world),
        quarantined(world),
    )
    drop(world, mostly_bad_day("2024-06-03"), "ratings-2024-06-03.csv")
    capfd.readouterr()

    bad = run_dag(dagbag, "interactions_validate", logical_date=at("2024-06-04"))

    task_log = capfd.readouterr()
    assert task_states(bad) == {"ingest": "failed"} and str(bad.state) == "failed"
    assert try_numbers(bad) == {"ingest": 1}, "a refused batch must fail at once, not be retried"
    text = task_log.out + task_log.err
    assert "ratings-2024-06-03.csv: refused: 75.0% of rows are bad, above the threshold of 5.0%" in text
    assert "item_id unknown (15)" in text
    assert len(read_clean_log(world)) == before and manifests(world) == batches  # nothing landed
    assert quarantined(world) == held
    assert asset_events(INTERACTIONS) == events

    drop(world, good_day("2024-06-04").assign(user_id="u4"), "ratings-2024-06-04.parquet")
    good = run_dag(dagbag, "interactions_validate", logical_date=at("2024-06-05"))  # June 4: a good file
    assert task_states(good) == {"ingest": "success"}
    assert len(read_clean_log(world)) == before + 8
    assert asset_events(INTERACTIONS) == events + 1


def test_catch_up_from_lands_a_backlog_of_days_in_one_run(
    world: Settings, dagbag: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    before, events = len(read_clean_log(world)), asset_events(INTERACTIONS)
    for day, user in (("2024-06-06", "u5"), ("2024-06-07", "u6"), ("2024-06-08", "u7")):
        drop(world, good_day(day).assign(user_id=user), f"ratings-{day}.csv")
    capfd.readouterr()

    too_late = run_dag(dagbag, "interactions_validate", logical_date=at("2024-06-09"),
                       run_conf={"catch_up_from": "2024-06-10"})  # fmt: skip

    assert task_states(too_late) == {"ingest": "failed"} and try_numbers(too_late) == {"ingest": 1}
    assert "catch_up_from 2024-06-10 is after the interval's start 2024-06-08" in "".join(capfd.readouterr())
    assert len(read_clean_log(world)) == before

    run = run_dag(dagbag, "interactions_validate", logical_date=at("2024-06-09"),
                  run_conf={"catch_up_from": "2024-06-06"})  # fmt: skip

    assert task_states(run) == {"ingest": "success"}
    assert (xcom(run, "ingest")["files"], xcom(run, "ingest")["rows_clean"]) == (3, 24)
    log = read_clean_log(world)
    assert len(log) == before + 24 and {"u5", "u6", "u7"} <= set(log["user_id"])
    assert asset_events(INTERACTIONS) == events + 1


# --- features_materialize ---------------------------------------------------------------------------------------


def test_features_materialize_applies_the_lake_and_loads_the_online_store(world: Settings, dagbag: Any) -> None:
    as_of = at("2024-06-02")
    assert features.scoring_features(world, [NEW_USER], as_of)["history_length"].tolist() == [0]  # before

    run = run_dag(dagbag, "features_materialize")

    assert task_states(run) == {"apply": "success", "materialize": "success"}
    history = features.scoring_features(world, [NEW_USER], as_of)
    assert history["history_length"].tolist() == [6]
    assert list(history["history_item_ids"][0]) == [f"i{10 + n}" for n in range(6)]
    texts = features.item_texts(world, ["i10", "i11"])  # the online store holds the catalogue now
    assert texts["title"].notna().all()
    assert xcom(run, "apply")["objects"] > 0


# --- recpo_retrain, model_promote, items_reindex ---------------------------------------------------------------


def test_recpo_retrain_registers_a_gated_challenger_from_the_champion(world: Settings, dagbag: Any) -> None:
    champion = registry.alias_version(world, registry.CHAMPION).version
    conf = {"phases": "recpo", "max_steps": 1, "max_minutes": 2, "eval_samples": 8, "auto_promote": False}

    run = run_dag(dagbag, "recpo_retrain", run_conf=conf)

    assert task_states(run) == {"train": "success", "promote": "skipped"}
    trained = xcom(run, "train")
    version = registry.resolve(world, trained["version"])
    assert registry.alias_version(world, registry.CHALLENGER).version == version.version
    assert registry.alias_version(world, registry.CHAMPION).version == champion  # auto_promote was off
    assert version.tags[registry.TAG_GATE] in ("passed", "failed") and version.tags[registry.TAG_GATE_DETAIL]
    assert version.tags[pipeline.TAG_TRAINED_FROM] == str(champion)
    assert version.tags[pipeline.TAG_TRAIN_RUN] == run.run_id
    assert trained["recipe"] == "smollm2-cpu@v1" and trained["phases"] == "recpo"
    # trained on what the lake landed, read through Feast (the prepared tables lack the days landed above)
    interactions, items = read_dataset(world)
    from_lake = prepare("lake", read_clean_log(world), items, world.max_history)
    assert trained["samples_from"] == "feast"
    from_tables = prepare("tables", interactions, items, world.max_history)
    assert trained["train_samples"] == len(from_lake.train) != len(from_tables.train)
    params = MlflowClient(world.mlflow_uri).get_run(trained["mlflow_run_id"]).data.params
    assert params["recipe.name"] == "smollm2-cpu"

    again = pipeline.retrain(world, run.run_id, phases="recpo", max_steps=1)  # a retried task: no second version
    assert again["version"] == trained["version"] and again["already_done"] is True


def test_model_promote_refuses_a_failed_gate_unless_forced(
    world: Settings, dagbag: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    champion = registry.alias_version(world, registry.CHAMPION).version
    challenger = str(registry.alias_version(world, registry.CHALLENGER).version)
    registry.tag_version(world, challenger, {registry.TAG_GATE: "failed", registry.TAG_GATE_DETAIL: "made to fail"})
    events = asset_events(CHAMPION)
    capfd.readouterr()

    refused = run_dag(dagbag, "model_promote", run_conf={"version": challenger, "force": False})

    text = "".join(capfd.readouterr())
    assert task_states(refused) == {"promote": "failed"} and try_numbers(refused) == {"promote": 1}
    assert f"v{challenger} failed its gate (made to fail); champion unchanged" in text
    assert registry.alias_version(world, registry.CHAMPION).version == champion
    assert asset_events(CHAMPION) == events

    forced = run_dag(dagbag, "model_promote", run_conf={"version": challenger, "force": True})

    assert task_states(forced) == {"promote": "success"}
    assert xcom(forced, "promote") | {"run_id": None} == {
        "run_id": None,
        "champion": challenger,
        "previous": str(champion),
        "gate": "failed",
        "forced": True,
    }
    assert str(registry.alias_version(world, registry.CHAMPION).version) == challenger
    assert asset_events(CHAMPION) == events + 1


def test_items_reindex_switches_the_items_alias_to_the_champion(world: Settings, dagbag: Any) -> None:
    champion = registry.alias_version(world, registry.CHAMPION)
    previous = champion.tags[registry.TAG_PROMOTED_FROM]
    before = index_refresh.run(world, "index-the-previous-champion", model_version=previous)["collection"]
    champion = str(champion.version)

    run = run_dag(dagbag, "items_reindex")

    assert task_states(run) == {"reindex": "success"}
    summary = xcom(run, "reindex")
    client = vectors.connect(world)
    try:
        live = vectors.live_collection(client)
        assert live == summary["collection"] != before
        assert live.startswith(f"items__v{champion}__")
        assert before in {c.name for c in client.get_collections().collections}  # the old one stays for rollback
    finally:
        client.close()
    assert summary["model_version"] == champion and summary["encoded"] == 240

    again = run_dag(dagbag, "items_reindex")  # the same champion: nothing encoded
    assert xcom(again, "reindex")["changed"] is False


# --- recommend_nightly ---------------------------------------------------------------------------------------


def published_run(settings: Settings) -> dict[str, Any]:
    run = RecStore.from_settings(settings).current_run()
    assert run is not None
    return run


def recommendation_rows(settings: Settings, run_id: str) -> pd.DataFrame:
    query = sa.text(
        "SELECT r.user_id, r.rank, r.item_id, u.shard FROM recommendations r JOIN recommendation_users u "
        "ON u.run_id = r.run_id AND u.user_id = r.user_id WHERE r.run_id = :run"
    )
    with RecStore.from_settings(settings).engine.connect() as conn:
        return pd.DataFrame(conn.execute(query, {"run": run_id}).mappings().all())


def test_recommend_nightly_scores_in_shards_and_publishes_under_the_airflow_run_id(
    world: Settings, dagbag: Any
) -> None:
    events = asset_events(RECOMMENDATIONS)

    run = run_dag(dagbag, "recommend_nightly", run_conf={"users": "16", "shards": 2})

    assert task_states(run) == {
        "plan": "success",
        "score[0]": "success",
        "score[1]": "success",
        "publish": "success",
    }
    published = published_run(world)
    assert published["run_id"] == run.run_id and published["status"] == "published"
    assert published["model_version"] == str(registry.alias_version(world, registry.CHAMPION).version)
    assert published["n_shards"] == 2
    rows = recommendation_rows(world, run.run_id)
    assert rows["user_id"].nunique() == 16 and set(rows["shard"]) == {0, 1}
    assert not rows.duplicated(["user_id", "rank"]).any() and not rows.duplicated(["user_id", "item_id"]).any()
    assert len(rows) == 16 * K
    assert [xcom(run, "score", i)["shard"] for i in (0, 1)] == ["0/2", "1/2"]
    assert xcom(run, "publish")["status"] == "published"
    assert asset_events(RECOMMENDATIONS) == events + 1


def test_a_promotion_in_the_mlflow_ui_reaches_the_next_nightly_run(
    world: Settings, dagbag: Any, tiny_cache: Path
) -> None:
    """Moving ``champion`` outside Airflow (no asset event): the next run serves the new version, reindexed."""
    first = run_dag(dagbag, "recommend_nightly", run_conf={"users": "8", "shards": 1})
    assert str(first.state) == "success"
    before = published_run(world)
    checkpoint = perturbed_copy(world.root / "models" / "tiny", world.root / "models" / "tiny-b", tiny_cache)
    version = model_admin.register_shipped(world, "register-tiny-b", checkpoint)["version"]
    assert version != before["model_version"]

    MlflowClient(world.mlflow_uri).set_registered_model_alias(world.registry_model_name, "champion", version)
    second = run_dag(dagbag, "recommend_nightly", run_conf={"users": "8", "shards": 1})

    assert str(second.state) == "success"
    after = published_run(world)
    assert after["run_id"] == second.run_id != before["run_id"]
    assert after["model_version"] == version
    assert after["item_collection"] != before["item_collection"]
    assert after["item_collection"].startswith(f"items__v{version}__")
    client = vectors.connect(world)
    try:
        assert vectors.live_collection(client) == after["item_collection"]
    finally:
        client.close()
