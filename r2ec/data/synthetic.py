"""A synthetic log with planted preferences, for tests and scaling benchmarks.

Items fall into clusters; the content words of an item's title and its genres name the cluster (a theme such as
"space" and, when there are more clusters than themes, a qualifier such as "northern"), so a text model can
recover the cluster from the title alone. Each user prefers one or two clusters: with probability
``preference`` the next item comes from a preferred cluster (popular items of the cluster more often),
otherwise from the whole catalogue. Ratings are higher inside preferred clusters. A user never repeats an
item. Everything is a deterministic function of the arguments (seed included).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from r2ec.data.schema import canonical_interactions, canonical_items

# theme -> (genre, title words); every word belongs to exactly one theme
THEMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "space": ("Science Fiction", ("Galaxy", "Starship", "Orbit", "Nebula", "Comet", "Astronaut")),
    "crime": ("Crime", ("Detective", "Heist", "Gangster", "Alibi", "Verdict", "Smuggler")),
    "romance": ("Romance", ("Love", "Kiss", "Wedding", "Sweetheart", "Valentine", "Courtship")),
    "horror": ("Horror", ("Ghost", "Haunted", "Zombie", "Vampire", "Nightmare", "Crypt")),
    "western": ("Western", ("Cowboy", "Saloon", "Sheriff", "Outlaw", "Prairie", "Stagecoach")),
    "war": ("War", ("Battalion", "Trench", "Admiral", "Bunker", "Frontline", "Regiment")),
    "animation": ("Animation", ("Cartoon", "Puppy", "Kitten", "Dragonling", "Bunny", "Toybox")),
    "sports": ("Sports", ("Champion", "Stadium", "Marathon", "Goalkeeper", "Knockout", "Playoff")),
    "music": ("Musical", ("Melody", "Symphony", "Chorus", "Guitar", "Ballad", "Rhythm")),
    "ocean": ("Adventure", ("Pirate", "Shipwreck", "Treasure", "Lagoon", "Harpoon", "Mermaid")),
    "science": ("Documentary", ("Volcano", "Glacier", "Fossil", "Molecule", "Telescope", "Rainforest")),
    "comedy": ("Comedy", ("Prank", "Clown", "Sitcom", "Jester", "Slapstick", "Giggle")),
}
QUALIFIERS = ("Northern", "Midnight", "Golden", "Silent", "Crimson", "Frozen", "Electric", "Royal")
MAX_CLUSTERS = len(THEMES) * (1 + len(QUALIFIERS))


def cluster_name(cluster: int) -> tuple[str, str | None]:
    """(theme, qualifier or None) that cluster ``cluster`` is written with."""
    theme = list(THEMES)[cluster % len(THEMES)]
    round_ = cluster // len(THEMES)
    return theme, (QUALIFIERS[round_ - 1] if round_ else None)


def generate_synthetic(
    n_users: int = 300,
    n_items: int = 240,
    n_clusters: int = 6,
    interactions_per_user: tuple[int, int] = (8, 40),
    preference: float = 0.85,
    seed: int = 0,
    start: str = "2024-01-01",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions, items) in the canonical schema; the defaults are sized for unit tests.

    Args:
        n_users, n_items, n_clusters: sizes; every cluster gets ``n_items // n_clusters`` or one more item.
        interactions_per_user: inclusive (min, max) count per user, drawn uniformly; capped at ``n_items``.
        preference: probability that an interaction comes from one of the user's preferred clusters.
        seed: the only source of randomness.
        start: users start at uniform times within 90 days after this date; gaps are exponential (~1 day).

    Item ``i`` belongs to cluster ``i % n_clusters``; the log is in time order.
    """
    if not 1 <= n_clusters <= MAX_CLUSTERS:
        raise ValueError(f"n_clusters must be in [1, {MAX_CLUSTERS}], got {n_clusters}")
    if n_items < n_clusters or n_users < 1:
        raise ValueError("need n_users >= 1 and n_items >= n_clusters")
    low, high = interactions_per_user
    if not 1 <= low <= high:
        raise ValueError(f"interactions_per_user must satisfy 1 <= min <= max, got {interactions_per_user}")
    rng = np.random.default_rng(seed)

    cluster_of = np.arange(n_items) % n_clusters
    members = [np.flatnonzero(cluster_of == c) for c in range(n_clusters)]
    # within a cluster, item popularity falls off like 1 / rank (a shuffled rank per item)
    popularity = np.empty(n_items)
    for items_c in members:
        popularity[items_c] = 1.0 / rng.permutation(np.arange(1, len(items_c) + 1))

    rows = []
    t0 = pd.Timestamp(start, tz="UTC").value // 10**9
    for user in range(n_users):
        n = min(int(rng.integers(low, high + 1)), n_items)
        liked = rng.choice(n_clusters, size=min(n_clusters, int(rng.integers(1, 3))), replace=False)
        in_liked = np.isin(cluster_of, liked)
        weight = np.where(in_liked, preference * popularity / popularity[in_liked].sum(), 0.0)
        weight += (1 - preference) / n_items
        sequence = rng.choice(n_items, size=n, replace=False, p=weight / weight.sum())
        times = t0 + int(rng.integers(0, 90 * 86400)) + np.cumsum(rng.exponential(86400, size=n)).astype(np.int64)
        ratings = np.clip(np.where(in_liked[sequence], 4, 2) + rng.integers(0, 2, size=n), 1, 5)
        rows.append(pd.DataFrame({"user_id": f"u{user}", "item_id": sequence, "t": times, "rating": ratings}))
    log = pd.concat(rows, ignore_index=True).sort_values("t", kind="stable")
    interactions = canonical_interactions(
        log.assign(item_id="i" + log["item_id"].astype(str), event_time=pd.to_datetime(log["t"], unit="s"))
    )
    return interactions, _catalogue(cluster_of, rng)


def _catalogue(cluster_of: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Items whose title words and genres all name their cluster."""
    titles, genres = [], []
    for cluster in cluster_of:
        theme, qualifier = cluster_name(int(cluster))
        genre, words = THEMES[theme]
        picked = rng.choice(words, size=2, replace=False)
        titles.append(" ".join(["The", *([qualifier] if qualifier else []), picked[0], "of the", picked[1]]))
        genres.append(", ".join([genre, *([qualifier] if qualifier else [])]))
    return canonical_items(
        pd.DataFrame(
            {
                "item_id": [f"i{i}" for i in range(len(cluster_of))],
                "title": [f"{t} {i}" for i, t in enumerate(titles)],
                "genres": genres,
                "cluster": cluster_of,
            }
        )
    )
