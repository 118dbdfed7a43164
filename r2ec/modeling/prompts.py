"""Every text the model sees, in one versioned place (method.md §2).

Item vectors are only comparable under the same template: bump ``TEMPLATE_VERSION`` whenever any string
or rendering rule here changes, and record it with every trained model and item collection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

TEMPLATE_VERSION = "t3"  # t2: a "Number of ratings" line where the catalogue has a count; t3: optional date line
ANSWER = "<answer>"
SYSTEM = "You are a recommender."
_CONTROL = dict.fromkeys(c for c in range(32) if c not in (9, 10))


@dataclass(frozen=True)
class Domain:
    """How prompts name the catalogue's items."""

    item_singular: str
    item_plural: str
    verb: str


DOMAINS: dict[str, Domain] = {
    "movies": Domain("movie", "movies", "watch"),
    "cds": Domain("CD or vinyl", "CDs and vinyl", "listen to"),
    "games": Domain("video game", "video games", "play"),
    "instruments": Domain("musical instrument", "musical instruments", "buy"),
    "items": Domain("item", "items", "like"),
}


@dataclass(frozen=True)
class PromptSettings:
    """How much of a user's history a prompt shows (compact prompts are the cheapest CPU lever)."""

    domain: str = "movies"
    history_items: int = 20  # most recent items shown (<= the samples' history length)
    show_time: bool = True  # "3d 4.0h ago:" prefix per line
    show_rating: bool = True  # "(4)" suffix per line
    show_year: bool = True  # "Year:" line of item prompts
    show_date: bool = False  # "Today is <date>." in user prompts (a clock for the model)
    max_title_chars: int = 80
    max_description_words: int = 100

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; known: {', '.join(DOMAINS)}")
        if self.history_items < 1:
            raise ValueError("history_items must be >= 1")


def clean_text(text: object, max_chars: int) -> str:
    """Catalogue text is untrusted data: drop control characters, collapse whitespace, cap the length."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or text is pd.NA:
        return ""
    cleaned = " ".join(str(text).translate(_CONTROL).split())
    return cleaned[:max_chars]


def format_elapsed(seconds: float) -> str:
    """Time since an interaction, as the prompt shows it: ``3d 4.0h``, ``2h 10.5min``, ``12.0min``."""
    seconds = max(0.0, float(seconds))
    days, rest = divmod(seconds, 86400)
    if days >= 1:
        return f"{int(days)}d {rest / 3600:.1f}h"
    hours, rest = divmod(seconds, 3600)
    if hours >= 1:
        return f"{int(hours)}h {rest / 60:.1f}min"
    return f"{seconds / 60:.1f}min"


def user_turn(
    titles: Sequence[str], ratings: Sequence[float], times: Sequence[int], now: int, settings: PromptSettings
) -> str:
    """The user message for a history (oldest first); only the last ``history_items`` are shown."""
    domain = DOMAINS[settings.domain]
    keep = slice(max(0, len(titles) - settings.history_items), len(titles))
    lines = []
    for title, rating, time in zip(titles[keep], ratings[keep], times[keep], strict=True):
        line = f"[{clean_text(title, settings.max_title_chars)}]"
        if settings.show_time:
            line = f"{format_elapsed(now - time)} ago: {line}"
        if settings.show_rating and not math.isnan(rating):
            line = f"{line} ({rating:g})"
        lines.append(line)
    today = f"Today is {datetime.fromtimestamp(now, UTC):%Y-%m-%d}. " if settings.show_date else ""
    header = (
        f"Analyze in depth and finally recommend next {domain.item_singular} I might {domain.verb} "
        f"inside {ANSWER} and </answer>.\nFor example, {ANSWER}a {domain.item_singular}</answer>.\n\n"
        f"{today}Below is my history of {domain.item_plural}"
        + (" and ratings (out of 5)" if settings.show_rating else "")
        + ", oldest first:\n"
    )
    return header + "\n".join(lines)


def item_turn(item: pd.Series, settings: PromptSettings) -> str:
    """The user message describing one catalogue item; fields the catalogue lacks are left out."""
    domain = DOMAINS[settings.domain]
    lines = [
        f"Summarize key attributes of the following {domain.item_singular} inside {ANSWER} and </answer>.",
        f"Title: {clean_text(item.get('title'), settings.max_title_chars)}",
    ]
    fields = (
        ("genres", "Genres"),
        ("year", "Year"),
        ("average_rating", "Average rating"),
        ("rating_count", "Number of ratings"),
    )
    for field, label in fields:
        if field == "year" and not settings.show_year:
            continue
        value = clean_text(item.get(field), settings.max_title_chars)
        if value:
            lines.append(f"{label}: {value}")
    description = clean_text(item.get("description"), 10 * settings.max_description_words)
    if description:
        lines.append("Description: " + " ".join(description.split()[: settings.max_description_words]))
    return "\n".join(lines)


def user_messages(turn: str) -> list[dict[str, str]]:
    """Chat for a user prompt; the template's generation prompt opens the assistant turn."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": turn}]


def item_messages(turn: str) -> list[dict[str, str]]:
    """Chat for an item prompt: the assistant turn is exactly ``<answer>``, left open."""
    return [*user_messages(turn), {"role": "assistant", "content": ANSWER}]
