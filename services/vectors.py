"""The one Qdrant adapter: versioned item collections behind the alias ``items``, and top-K retrieval.

The switch pattern (architecture.md): a refresh builds ``items__v{model}__{template}__{timestamp}`` beside the
live collection, verifies it (count and a probe query), then moves the alias in one
``update_collection_aliases`` call, so readers see the old index or the new one, never a half-built one.
Previous collections stay for rollback. Point ids are catalogue indices, the ids ``Samples.history`` uses.
Local mode (``:memory:`` or a folder) and a server URL go through the same calls.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from qdrant_client import QdrantClient, models

from services.settings import Settings

ALIAS = "items"
PREFIX = "items__"
_READY_TIMEOUT_S = 600.0


class VectorIndexError(RuntimeError):
    """A built collection failed verification, or there is no index to query or roll back to."""


@dataclass(frozen=True)
class IndexVersion:
    """What a collection was built from; stored as collection metadata so a refresh can recognise it."""

    model_version: str
    template_version: str
    catalogue_digest: str
    n_items: int

    def as_metadata(self, verified: bool) -> dict[str, object]:
        return {**self.__dict__, "verified": verified}


def connect(settings: Settings) -> QdrantClient:
    """Server when ``qdrant_url`` is set, else local mode in ``qdrant_path`` (default ``<state>/qdrant``)."""
    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return QdrantClient(url=settings.qdrant_url, api_key=key)
    if settings.qdrant_path == ":memory:":
        return QdrantClient(location=":memory:")
    path = settings.qdrant_path or settings.root / "qdrant"
    return QdrantClient(path=str(path))


def catalogue_digest(items: pd.DataFrame) -> str:
    """Fingerprint of the ids and titles that went into an index (a changed catalogue needs a new one)."""
    text = "\n".join(f"{i}\t{t}" for i, t in zip(items["item_id"], items["title"], strict=True))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def collection_name(version: IndexVersion, now: datetime | None = None) -> str:
    """``items__v{model}__{template}__{UTC timestamp}``; odd characters become ``-`` (Qdrant name rules)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%f")
    safe = [re.sub(r"[^A-Za-z0-9.-]", "-", part) for part in (version.model_version, version.template_version)]
    return f"{PREFIX}v{safe[0]}__{safe[1]}__{stamp}"


def live_collection(client: QdrantClient) -> str | None:
    """The collection alias ``items`` points at, or None before the first refresh."""
    for alias in client.get_aliases().aliases:
        if alias.alias_name == ALIAS:
            return alias.collection_name
    return None


def _metadata(client: QdrantClient, name: str) -> dict[str, object]:
    return dict(client.get_collection(name).config.metadata or {})


def _collections(client: QdrantClient) -> list[str]:
    """Our item collections, oldest first (the timestamp is the last part of the name)."""
    names = [c.name for c in client.get_collections().collections if c.name.startswith(PREFIX)]
    return sorted(names, key=lambda name: name.rsplit("__", 1)[-1])


def _wait_ready(client: QdrantClient, name: str) -> None:
    """A server indexes in the background; wait until the collection is green (local mode always is)."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while client.get_collection(name).status != models.CollectionStatus.GREEN:
        if time.monotonic() > deadline:
            raise VectorIndexError(f"collection {name} not ready after {_READY_TIMEOUT_S:.0f} s")
        time.sleep(0.5)


def _verify(client: QdrantClient, name: str, vectors: np.ndarray) -> None:
    """Every point is there, and a probe item finds itself (cosine 1) among its nearest neighbours."""
    count = client.count(name, exact=True).count
    if count != len(vectors):
        raise VectorIndexError(f"collection {name} holds {count} points, expected {len(vectors)}")
    probe = len(vectors) // 2
    hits = client.query_points(name, query=vectors[probe].tolist(), limit=5, with_payload=False).points
    if not any(hit.id == probe and hit.score > 0.999 for hit in hits):
        raise VectorIndexError(f"probe query on {name} did not find item {probe} at cosine 1")


def _upsert(
    client: QdrantClient, name: str, vectors: np.ndarray, items: pd.DataFrame, version: IndexVersion, batch_size: int
) -> None:
    for start in range(0, len(vectors), batch_size):
        stop = min(start + batch_size, len(vectors))
        payloads = [
            {
                "item_id": str(item_id),
                "title": str(title),
                "model_version": version.model_version,
                "template_version": version.template_version,
            }
            for item_id, title in zip(items["item_id"][start:stop], items["title"][start:stop], strict=True)
        ]
        batch = models.Batch(ids=list(range(start, stop)), vectors=vectors[start:stop].tolist(), payloads=payloads)
        client.upsert(name, points=batch, wait=True)


def move_alias(client: QdrantClient, collection: str) -> None:
    """Point ``items`` at ``collection`` in one request: delete and create apply together."""
    client.update_collection_aliases(
        change_aliases_operations=[
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=ALIAS)),
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=ALIAS)),
        ]
    )


def find_live(client: QdrantClient, version: IndexVersion) -> str | None:
    """The live collection if it was built from exactly ``version`` (then a refresh has nothing to do)."""
    live = live_collection(client)
    if live is not None and _metadata(client, live) == version.as_metadata(verified=True):
        return live
    return None


def publish(
    client: QdrantClient,
    vectors: np.ndarray,
    items: pd.DataFrame,
    version: IndexVersion,
    batch_size: int = 128,
    keep: int = 2,
) -> dict[str, object]:
    """Build, verify and switch to a collection of ``vectors`` (row i = catalogue item i); prune old ones.

    Idempotent: when the live collection already holds ``version`` nothing is written.
    """
    if len(vectors) != len(items) or len(vectors) != version.n_items:
        raise ValueError(f"{len(vectors)} vectors for {len(items)} items (version says {version.n_items})")
    live = find_live(client, version)
    if live is not None:
        return {"collection": live, "changed": False, "deleted": []}
    name = collection_name(version)
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE),
        metadata=version.as_metadata(verified=False),
    )
    _upsert(client, name, np.asarray(vectors, dtype=np.float32), items, version, batch_size)
    _wait_ready(client, name)
    _verify(client, name, vectors)
    client.update_collection(name, metadata={"verified": True})
    previous = live_collection(client)
    move_alias(client, name)
    return {"collection": name, "previous": previous, "changed": True, "deleted": prune(client, keep)}


def prune(client: QdrantClient, keep: int) -> list[str]:
    """Keep the live collection and the ``keep`` newest verified ones before it; delete the rest.

    Unverified collections (a refresh that crashed) go too, unless newer than the live one: another
    refresh may be building that one right now.
    """
    live = live_collection(client)
    names = _collections(client)
    if live not in names:
        return []
    older = names[: names.index(live)]
    verified = [name for name in older if _metadata(client, name).get("verified")]
    kept = set(verified[-keep:]) if keep else set()
    doomed = [name for name in older if name not in kept]
    for name in doomed:
        client.delete_collection(name)
    return doomed


def rollback(client: QdrantClient) -> str:
    """Move ``items`` back to the newest verified collection older than the live one; return its name."""
    live = live_collection(client)
    names = _collections(client)
    older = names[: names.index(live)] if live in names else []
    for name in reversed(older):
        if _metadata(client, name).get("verified"):
            move_alias(client, name)
            return name
    raise VectorIndexError("no previous verified item collection to roll back to")


def _excluding(ids: Sequence[int]) -> models.Filter | None:
    """A filter that drops these point ids (negative ids are history padding); None when nothing to drop."""
    keep = [int(i) for i in ids if i >= 0]
    return models.Filter(must_not=[models.HasIdCondition(has_id=keep)]) if keep else None


def top_k(
    client: QdrantClient,
    collection: str,
    user_vectors: np.ndarray,
    exclude: Sequence[Sequence[int]],
    k: int,
    exact: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ``k`` items per user, each user's ``exclude`` ids (history) filtered out, in one round trip.

    Pass the collection *name* a job resolved once at its start (``live_collection``), not the alias, so a
    refresh in the middle of a run cannot mix two indexes. Returns catalogue ids (B, k) int64 and cosine
    scores (B, k) float32, best first; -1 / NaN fill rows with fewer than ``k`` candidates.
    """
    params = models.SearchParams(exact=True) if exact else None  # local mode is always exact
    requests = [
        models.QueryRequest(query=vector.tolist(), filter=_excluding(seen), params=params, limit=k)
        for vector, seen in zip(user_vectors, exclude, strict=True)
    ]
    ids = np.full((len(requests), k), -1, dtype=np.int64)
    scores = np.full((len(requests), k), np.nan, dtype=np.float32)
    for row, response in enumerate(client.query_batch_points(collection, requests=requests)):
        ids[row, : len(response.points)] = [point.id for point in response.points]
        scores[row, : len(response.points)] = [point.score for point in response.points]
    return ids, scores
