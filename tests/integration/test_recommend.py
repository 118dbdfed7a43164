"""The nightly recommendation job on a real embedded world (lake, Feast, MLflow, Qdrant local, SQLite) and a tiny
model: lists are valid, runs are idempotent, a killed run leaves the published one alone, shards cover every user
once, bad input is one line and exit code 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from r2ec.evaluation.rationales import is_degenerate
from services.cli import EXIT_USAGE, main
from services.jobs import recommend
from services.lake import read_clean_log
from services.recstore import SCORED, RankedItem, RecStore, UserResult
from services.settings import Settings
from tests.service_world import build_world, copy_world

AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
K = 5


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_cache: Path) -> Settings:
    return build_world(tmp_path_factory.mktemp("world"), tiny_cache, recommend_chunk_users=8)


def rows(settings: Settings, run_id: str) -> pd.DataFrame:
    store = RecStore.from_settings(settings)
    query = sa.text("SELECT user_id, rank, item_id, score, rationale FROM recommendations WHERE run_id = :r")
    with store.engine.connect() as conn:
        return pd.DataFrame(conn.execute(query, {"r": run_id}).mappings().all())


def current_rows(settings: Settings) -> pd.DataFrame:
    with RecStore.from_settings(settings).engine.connect() as conn:
        return pd.DataFrame(conn.execute(sa.text("SELECT * FROM recommendations_current")).mappings().all())


def test_a_run_publishes_k_unseen_items_and_a_rationale_per_user(world: Settings) -> None:
    summary = recommend.run(world, "night-1", "24", top_k=K, as_of=AS_OF)
    assert summary["published"]["status"] == "published"
    assert summary["users_scored"] + summary["users_skipped"] == 24
    table = rows(world, "night-1")
    assert len(table) == summary["users_scored"] * K
    assert not table.duplicated(["user_id", "item_id"]).any() and not table.duplicated(["user_id", "rank"]).any()
    assert set(table.groupby("user_id")["rank"].apply(frozenset)) == {frozenset(range(1, K + 1))}
    seen = read_clean_log(world).groupby("user_id")["item_id"].agg(set)
    assert not any(item in seen[user] for user, item in zip(table["user_id"], table["item_id"], strict=True))
    assert (table.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    stored = {u["user_id"]: u["rationale"] for u in RecStore.from_settings(world).run_users("night-1")}
    assert table.groupby("user_id")["rationale"].nunique().eq(1).all()  # one rationale per list, on every row
    assert all(stored[user] == text for user, text in zip(table["user_id"], table["rationale"], strict=True))
    quality = summary["published"]["rationale_quality"]
    assert quality["n"] == summary["users_scored"] and 0 <= quality["degenerate_share"] <= 1
    assert set(summary["time_split_s"]) == {"features", "generation", "vectors", "fluency", "retrieval", "writing"}


def test_the_same_run_id_again_changes_nothing(world: Settings) -> None:
    recommend.run(world, "night-2", "16", top_k=K, as_of=AS_OF)
    before = rows(world, "night-2").sort_values(["user_id", "rank"], ignore_index=True)
    again = recommend.run(world, "night-2", "16", top_k=K, as_of=AS_OF)
    assert again["already_done"] is True
    pd.testing.assert_frame_equal(before, rows(world, "night-2").sort_values(["user_id", "rank"], ignore_index=True))


def test_a_killed_run_leaves_the_published_one_and_resumes_without_duplicates(world: Settings) -> None:
    recommend.run(world, "night-before", "16", top_k=K, as_of=AS_OF)
    published = current_rows(world)
    env = {**os.environ, "R2EC_HOME": str(world.root), "R2EC_DATASET": "synthetic", "R2EC_RECOMMEND_CHUNK_USERS": "4"}
    argv = [sys.executable, "-m", "services.cli", "recommend", "--run-id", "killed", "--users", "40"]
    argv += ["--top-k", str(K), "--as-of", AS_OF.isoformat()]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = RecStore.from_settings(world)
    deadline = time.monotonic() + 240
    while not store.done_users("killed") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = store.done_users("killed")
    assert 0 < len(written) < 40, "the kill should land between the first chunk and the end"
    pd.testing.assert_frame_equal(current_rows(world), published)  # readers still see the previous run

    resumed = recommend.run(world, "killed", "40", top_k=K, as_of=AS_OF)
    assert resumed["users_resumed"] == len(written)
    table = rows(world, "killed")
    assert not table.duplicated(["user_id", "rank"]).any()
    assert table["user_id"].nunique() == resumed["published"]["rationale_quality"]["n"]
    assert set(current_rows(world)["run_id"]) == {"killed"}


def test_shards_cover_every_user_once_and_publish_together(world: Settings) -> None:
    with pytest.raises(ValueError, match="as-of"):
        recommend.run(world, "sharded", "30", shard=(0, 3), top_k=K)
    for index in range(3):
        summary = recommend.run(world, "sharded", "30", shard=(index, 3), top_k=K, as_of=AS_OF)
        assert "published" not in summary
    assert RecStore.from_settings(world).get_run("sharded")["status"] == "running"
    recommend.publish(world, "sharded", "30")
    with RecStore.from_settings(world).engine.connect() as conn:
        users = conn.execute(sa.text("SELECT user_id FROM recommendation_users WHERE run_id = 'sharded'")).scalars()
        users = list(users)
    expected = sorted(read_clean_log(world)["user_id"].unique())[:30]
    assert sorted(users) == expected  # the union of the shards, none twice


def test_a_run_of_degenerate_rationales_is_not_published(world: Settings) -> None:
    recommend.run(world, "good", "8", top_k=K, as_of=AS_OF)
    store = RecStore.from_settings(world)
    store.start_run(
        "dogs", model_name="r2ec", model_version="1", item_collection="x", feature_snapshot=AS_OF, top_k=K, n_shards=1
    )
    users = sorted(read_clean_log(world)["user_id"].unique())[:8]
    loop = "dogs dogs dogs dogs dogs dogs dogs dogs"
    items = [RankedItem(r, f"i{r}", f"t{r}", 1.0 / r) for r in range(1, K + 1)]
    store.write_users("dogs", 0, [UserResult(u, SCORED, [], loop, items) for u in users], AS_OF)
    assert is_degenerate(loop)
    with pytest.raises(recommend.RunRefused, match="degenerate"):
        recommend.publish(world, "dogs", "8")
    assert store.get_run("dogs")["status"] == "failed"
    assert set(current_rows(world)["run_id"]) == {"good"}


def test_a_user_without_history_before_the_run_gets_a_status(world: Settings) -> None:
    first = read_clean_log(world).groupby("user_id")["event_time"].min().sort_values()
    early = first.index[0]
    as_of = first.iloc[0] + (first.iloc[1] - first.iloc[0]) / 2 if first.iloc[1] > first.iloc[0] else first.iloc[0]
    users_file = world.root / "early.txt"
    users_file.write_text(f"{early}\n{first.index[-1]}\n")
    summary = recommend.run(world, "early", str(users_file), top_k=K, as_of=as_of.to_pydatetime())
    assert summary["users_skipped"] >= 1
    statuses = {u["user_id"]: u["status"] for u in RecStore.from_settings(world).run_users("early")}
    assert statuses[first.index[-1]] == "no_history"


@pytest.mark.parametrize("case", ["unknown user", "no champion", "empty catalogue", "unreachable database"])
def test_bad_input_is_one_line_exit_2_and_leaves_the_published_run(
    world: Settings, case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recommend.run(world, f"before-{case}", "8", top_k=K, as_of=AS_OF)
    published = current_rows(world)
    home = world.root
    argv = ["recommend", "--run-id", f"bad-{case}", "--as-of", AS_OF.isoformat(), "--users", "8"]
    if case == "unknown user":
        (tmp_path / "users.txt").write_text("u1\nnobody-like-this\n")
        argv[-1] = str(tmp_path / "users.txt")
    elif case == "no champion":
        monkeypatch.setenv("R2EC_REGISTRY_MODEL_NAME", "never-registered")
    elif case == "empty catalogue":
        home = copy_world(world.root, tmp_path / "copy")
        items = pd.read_parquet(home / "data" / "synthetic" / "items.parquet")
        items.iloc[:0].to_parquet(home / "data" / "synthetic" / "items.parquet", index=False)
    else:
        monkeypatch.setenv("R2EC_RECSTORE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    monkeypatch.setenv("R2EC_DATASET", "synthetic")
    capsys.readouterr()
    code = main(["--home", str(home), *argv])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    pd.testing.assert_frame_equal(current_rows(world), published)


def test_items_removed_from_the_catalogue_since_they_were_logged_are_skipped(world: Settings, tmp_path: Path) -> None:
    """A history may name items the catalogue no longer has: they are left out of prompts and lists, no crash."""
    home = copy_world(world.root, tmp_path / "copy")
    items_file = home / "data" / "synthetic" / "items.parquet"
    items = pd.read_parquet(items_file)
    log = read_clean_log(world)
    removed = set(log["item_id"].value_counts().index[:5])  # the most logged items: in many histories
    items[~items["item_id"].isin(removed)].to_parquet(items_file, index=False)
    settings = Settings(**{**world.model_dump(), "home": home})
    summary = recommend.run(settings, "after-removal", "12", top_k=K, as_of=AS_OF)
    assert summary["published"]["status"] == "published" and summary["users_scored"] == 12
    users = RecStore.from_settings(settings).run_users("after-removal")
    assert not removed & {h["item_id"] for u in users for h in u["history"]}
    assert not removed & set(rows(settings, "after-removal")["item_id"])
