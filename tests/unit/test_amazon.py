"""Amazon Reviews 2023 loader on small files written by the test."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from r2ec.data.amazon import clean_title, load_amazon_reviews, parse_price
from r2ec.data.movielens import DatasetUnavailable

MS_PER_DAY = 86_400_000
T2023 = int(pd.Timestamp("2023-06-01", tz="UTC").value // 1_000_000)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def meta(asin: str, title: object = "A Good Album", price: object = 9.99, **extra: object) -> dict:
    return {"parent_asin": asin, "title": title, "price": price, "main_category": "Digital Music", **extra}


def review(user: str, asin: str, days_before: float, rating: float = 5.0) -> dict:
    return {
        "user_id": user,
        "parent_asin": asin,
        "asin": asin + "-v",
        "rating": rating,
        "timestamp": T2023 - int(days_before * MS_PER_DAY),
        "text": "great",
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  &quot;Abbey Road&quot; ", "Abbey Road"),
        ("Rock &amp; Roll", "Rock & Roll"),
        ("X", None),
        (None, None),
        ("<span id='x'>Title</span>", None),
        (" ".join(["word"] * 21), None),
        (" ".join(["word"] * 20), " ".join(["word"] * 20)),
    ],
)
def test_title_filter(raw: object, expected: str | None) -> None:
    assert clean_title(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [(12.5, 12.5), ("$1,299.00", 1299.0), ("None", None), (None, None), (0, None), ("—", None)]
)
def test_price_filter(raw: object, expected: float | None) -> None:
    assert parse_price(raw) == expected


def test_filters_window_and_schema(tmp_path: Path) -> None:
    meta_path = write_jsonl(
        tmp_path / "meta.jsonl.gz",
        [
            meta("A", categories=["CDs", "Rock"], description=["Loud", "record"], average_rating=4.5),
            meta("B"),
            meta("C"),
            meta("NOPRICE", price=None),
            meta("NOTITLE", title=None),
        ],
    )
    reviews_path = write_jsonl(
        tmp_path / "reviews.jsonl",
        [
            review("u1", "A", 30),
            review("u1", "NOPRICE", 29),
            review("u2", "NOTITLE", 28),
            review("u2", "B", 20),
            review("u2", "B", 20),  # exact duplicate: kept once
            review("u3", "C", 800),  # two years back: outside a window that already holds min_items items
            review("u3", "A", 1, rating=3.0),
            review("u4", "GONE", 2),  # not in the meta file
        ],
    )
    interactions, items = load_amazon_reviews(reviews_path, meta_path, min_items=2)
    assert list(interactions.columns) == ["user_id", "item_id", "event_time", "rating"]
    assert str(interactions["event_time"].dt.tz) == "UTC"
    # file order kept, filtered items and the old review gone
    assert list(zip(interactions["user_id"], interactions["item_id"], strict=True)) == [
        ("u1", "A"),
        ("u2", "B"),
        ("u3", "A"),
    ]
    assert interactions["rating"].tolist() == [5.0, 5.0, 3.0]
    assert items["item_id"].tolist() == ["A", "B"]
    a = items.iloc[0]
    assert (a["title"], a["genres"], a["description"], a["price"]) == ("A Good Album", "CDs, Rock", "Loud record", 9.99)


def test_window_moves_back_until_enough_items(tmp_path: Path) -> None:
    meta_path = write_jsonl(tmp_path / "meta.jsonl", [meta(x) for x in "ABCD"])
    reviews_path = write_jsonl(
        tmp_path / "reviews.jsonl",
        [review("u1", "A", 10), review("u1", "B", 500), review("u2", "C", 1000), review("u2", "D", 2000)],
    )
    # one year holds 1 item, two years 2, three years 3: the start moves back until 3 items are inside
    interactions, items = load_amazon_reviews(reviews_path, meta_path, min_items=3)
    assert set(interactions["item_id"]) == {"A", "B", "C"}
    assert sorted(items["item_id"]) == ["A", "B", "C"]
    # asking for more items than exist keeps the whole log
    _, everything = load_amazon_reviews(reviews_path, meta_path, min_items=10)
    assert sorted(everything["item_id"]) == ["A", "B", "C", "D"]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="not found"):
        load_amazon_reviews(tmp_path / "nope.jsonl", tmp_path / "meta.jsonl")
