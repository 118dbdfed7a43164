"""Amazon Reviews 2023 (McAuley Lab) of one category, from files the user downloaded.

Inputs: the category's review file (``<Category>.jsonl``) and meta file (``meta_<Category>.jsonl``), plain or
gzipped. Fields read: reviews ``user_id``, ``parent_asin``, ``timestamp`` (ms), ``rating``; meta
``parent_asin``, ``title``, ``price``, ``main_category``, ``categories``, ``average_rating``, ``store``,
``description``. An item is a ``parent_asin`` (variants of one product share it).

Preprocessing, our reading of the paper's (D³-style, without k-core filtering; the authors say so):

1. **Title filter**: titles are HTML-unescaped and stripped of spaces and quotes; an item is dropped when its
   title is missing, shorter than 2 characters, longer than 20 words, or contains HTML markup (``<span``).
2. **Price filter**: an item is dropped unless its ``price`` parses as a number > 0 (strings such as
   ``"$12.99"`` included; ``None``/``"—"`` dropped).
3. Reviews of dropped items and of items absent from the meta file are removed; exact duplicate reviews
   (same user, item and timestamp) are kept once.
4. **Time window**: the window ends at the latest remaining review (inclusive) and starts ``window_years``
   years earlier; while the window holds fewer than ``min_items`` distinct items and older reviews exist,
   its start moves back one more year. Reviews outside the window are dropped.
5. No user or item frequency filter: users with one review stay in the log (they give no sample).

The log keeps the review file's order (the tie-break of method.md §4); the catalogue holds the items that
remain, in order of first appearance, with ``genres`` from ``categories`` (else ``main_category``) and
``description`` joined into one string; ``price``, ``average_rating`` and ``store`` are kept as extra columns.
"""

from __future__ import annotations

import gzip
import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from r2ec.data.movielens import DatasetUnavailable
from r2ec.data.schema import canonical_interactions, canonical_items

MAX_TITLE_WORDS = 20


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a ``.jsonl`` or ``.jsonl.gz`` file; a missing file is a :class:`DatasetUnavailable`."""
    if not path.is_file():
        raise DatasetUnavailable(f"file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def clean_title(raw: object) -> str | None:
    """The title as kept, or None when the title filter drops the item."""
    if not isinstance(raw, str) or "<span" in raw:
        return None
    title = html.unescape(raw).strip(' "')
    return title if len(title) > 1 and len(title.split()) <= MAX_TITLE_WORDS else None


def parse_price(raw: object) -> float | None:
    """A positive price, or None when the price filter drops the item."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.replace("$", "").replace(",", "").strip())
        except ValueError:
            return None
    else:
        return None
    return value if value > 0 else None


def _catalogue(meta_path: Path) -> pd.DataFrame:
    """Items of the meta file that pass the title and price filters."""
    rows = []
    for record in _read_jsonl(meta_path):
        title, price = clean_title(record.get("title")), parse_price(record.get("price"))
        if title is None or price is None or not record.get("parent_asin"):
            continue
        categories = record.get("categories") or []
        description = record.get("description") or []
        rows.append(
            {
                "item_id": str(record["parent_asin"]),
                "title": title,
                "genres": ", ".join(categories) if categories else record.get("main_category"),
                "description": " ".join(description) if isinstance(description, list) else str(description),
                "price": price,
                "average_rating": record.get("average_rating"),
                "store": record.get("store"),
            }
        )
    items = pd.DataFrame(
        rows, columns=["item_id", "title", "genres", "description", "price", "average_rating", "store"]
    )
    return items.drop_duplicates("item_id", keep="first")


def _window_start(times: pd.Series, items: pd.Series, min_items: int, window_years: int) -> pd.Timestamp:
    """Start of the shortest window (whole years back from the last review) holding ``min_items`` items."""
    end, first = times.max(), times.min()
    years = window_years
    while True:
        start = end - pd.DateOffset(years=years)
        if start <= first or items[times >= start].nunique() >= min_items:
            return start
        years += 1


def load_amazon_reviews(
    reviews: str | Path, meta: str | Path, min_items: int = 10_000, window_years: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions, items) of one Amazon Reviews 2023 category, preprocessed as the module docstring says."""
    items = _catalogue(Path(meta))
    keep = set(items["item_id"])
    rows = [
        (str(r["user_id"]), str(r["parent_asin"]), int(r["timestamp"]), r.get("rating"))
        for r in _read_jsonl(Path(reviews))
        if str(r.get("parent_asin")) in keep and r.get("user_id") and r.get("timestamp") is not None
    ]
    log = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"]).drop_duplicates(
        ["user_id", "item_id", "timestamp"]
    )
    if log.empty:
        raise DatasetUnavailable(f"no review of {reviews} passes the filters")
    log["event_time"] = pd.to_datetime(log["timestamp"], unit="ms", utc=True)
    start = _window_start(log["event_time"], log["item_id"], min_items, window_years)
    log = log[log["event_time"] >= start]
    order = {item_id: i for i, item_id in enumerate(log["item_id"].drop_duplicates())}
    items = items[items["item_id"].isin(order)].sort_values("item_id", key=lambda s: s.map(order))
    return canonical_interactions(log), canonical_items(items)
