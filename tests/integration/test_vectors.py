"""The item index on a real Qdrant in local ``:memory:`` mode: switch pattern, pruning, exact retrieval."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from qdrant_client import QdrantClient, models

from services import vectors
from services.vectors import IndexVersion, VectorIndexError

N_ITEMS, DIM, K = 300, 16, 10


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    rows = rng.standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture
def client() -> QdrantClient:
    return QdrantClient(location=":memory:")


@pytest.fixture
def items() -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"i{n}" for n in range(N_ITEMS)], "title": [f"Movie {n}" for n in range(N_ITEMS)]})


def version(model_version: str, items: pd.DataFrame) -> IndexVersion:
    return IndexVersion(model_version, "t1", vectors.catalogue_digest(items), len(items))


def publish(client: QdrantClient, items: pd.DataFrame, model_version: str, seed: int, keep: int = 2) -> dict:
    table = unit_rows(np.random.default_rng(seed), len(items))
    return vectors.publish(client, table, items, version(model_version, items), batch_size=64, keep=keep)


def brute_force(table: np.ndarray, users: np.ndarray, history: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = users @ table.T
    for row, seen in enumerate(history):
        scores[row, seen[seen >= 0]] = -np.inf
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(scores, ids, axis=1)


def test_refresh_twice_with_the_same_version_changes_nothing(client, items):
    first = publish(client, items, "1", seed=0)
    before = sorted(c.name for c in client.get_collections().collections)
    second = publish(client, items, "1", seed=0)

    assert first["changed"] and not second["changed"]
    assert second["collection"] == first["collection"] == vectors.live_collection(client)
    assert sorted(c.name for c in client.get_collections().collections) == before
    assert client.count(vectors.ALIAS, exact=True).count == N_ITEMS


def test_a_changed_catalogue_is_a_new_index(client, items):
    first = publish(client, items, "1", seed=0)
    renamed = items.assign(title=items["title"].where(items.index != 5, "Renamed"))
    second = publish(client, renamed, "1", seed=0)
    assert second["changed"] and second["collection"] != first["collection"]


def test_payload_and_collection_shape(client, items):
    name = publish(client, items, "7", seed=0)["collection"]
    assert name.startswith("items__v7__t1__")
    info = client.get_collection(vectors.ALIAS)
    assert info.config.params.vectors.size == DIM
    assert info.config.params.vectors.distance == models.Distance.COSINE
    point = client.retrieve(vectors.ALIAS, ids=[42], with_payload=True)[0]
    assert point.payload == {"item_id": "i42", "title": "Movie 42", "model_version": "7", "template_version": "t1"}


def test_new_versions_keep_previous_collections_then_prune_and_roll_back(client, items):
    names = [publish(client, items, str(v), seed=v, keep=2)["collection"] for v in (1, 2, 3, 4)]
    remaining = {c.name for c in client.get_collections().collections}
    assert remaining == set(names[1:])
    assert vectors.live_collection(client) == names[3]

    assert vectors.rollback(client) == names[2]
    assert vectors.live_collection(client) == names[2]
    assert client.retrieve(vectors.ALIAS, ids=[0])[0].payload["model_version"] == "3"


def test_crashed_refresh_leftovers_are_deleted_and_never_served(client, items):
    publish(client, items, "1", seed=0)
    orphan = vectors.collection_name(version("2", items))
    client.create_collection(
        orphan,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        metadata=version("2", items).as_metadata(verified=False),
    )
    live = publish(client, items, "3", seed=3)["collection"]
    assert orphan not in {c.name for c in client.get_collections().collections}
    assert vectors.live_collection(client) == live


def test_failed_verification_leaves_the_live_index_alone(client, items):
    live = publish(client, items, "1", seed=0)["collection"]
    broken = unit_rows(np.random.default_rng(1), N_ITEMS)
    broken[N_ITEMS // 2] = 0.0  # the probe item cannot find itself at cosine 1
    with pytest.raises(VectorIndexError, match="probe"):
        vectors.publish(client, broken, items, version("2", items), batch_size=64)
    assert vectors.live_collection(client) == live


def test_retrieval_equals_brute_force_with_history_excluded(client, items):
    rng = np.random.default_rng(3)
    table = unit_rows(rng, N_ITEMS)
    collection = vectors.publish(client, table, items, version("1", items), batch_size=64)["collection"]
    users = unit_rows(rng, 25)
    history = np.full((25, 20), -1, dtype=np.int64)
    for row in range(25):
        seen = rng.choice(N_ITEMS, size=rng.integers(0, 21), replace=False)
        history[row, : len(seen)] = seen
    # make every user's history hold its best items, so exclusion changes the answer
    history[:, 0] = np.argmax(users @ table.T, axis=1)

    ids, scores = vectors.top_k(client, collection, users, history, K)
    want_ids, want_scores = brute_force(table, users, history, K)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert not any(np.isin(row_ids, seen).any() for row_ids, seen in zip(ids, history, strict=True))


def test_queries_during_alias_moves_see_one_whole_index(client, items):
    rng = np.random.default_rng(5)
    tables = {v: unit_rows(rng, N_ITEMS) for v in ("1", "2")}
    names = {
        v: vectors.publish(client, t, items, version(v, items), batch_size=64)["collection"] for v, t in tables.items()
    }
    users = unit_rows(rng, 4)
    no_history = np.full((4, 1), -1)
    expected = {v: brute_force(t, users, no_history, K)[0] for v, t in tables.items()}
    served_versions, errors, stop = [], [], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                for row, user in enumerate(users):
                    hits = client.query_points(vectors.ALIAS, query=user.tolist(), limit=K).points
                    served = {hit.payload["model_version"] for hit in hits}
                    assert len(served) == 1, f"mixed index {served}"
                    (v,) = served
                    assert [hit.id for hit in hits] == expected[v][row].tolist()
                    served_versions.append(v)
            except Exception as error:  # any failure of a reader is the finding
                errors.append(error)
                return

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so readers land inside any gap of a move
    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    moves, deadline = 0, time.monotonic() + 30
    # back-to-back moves: a non-atomic swap (delete, then create) fails this test within a few thousand moves
    while (moves < 3000 or len(set(served_versions)) < 2) and time.monotonic() < deadline and not errors:
        vectors.move_alias(client, names["1" if moves % 2 else "2"])
        moves += 1
    stop.set()
    for thread in threads:
        thread.join()
    sys.setswitchinterval(interval)
    assert errors == []
    assert set(served_versions) == {"1", "2"}
