"""Rationale quality: the figures that tell readable reasoning from a degenerate loop (method.md §8).

A rationale is shown to people next to its ranked list, so it is measured like the ranking is:

- ``stop_rate``: share that ended with ``<answer>`` before the token cap (a loop never stops);
- ``degenerate_share``: share whose most frequent word 3-gram covers more than a third of the words
  ("dogs dogs dogs ..." or "a movie a movie ...");
- ``grounded_share``: share that names a title or a genre from the user's own history;
- ``distinct_2``: distinct word bigrams over all bigrams, across users (one canned sentence for everyone is low);
- ``fluency``: mean token log-likelihood under the untouched backbone (computed by the model; passed in here).

Example::

    >>> is_degenerate("dogs dogs dogs dogs dogs dogs")
    True
    >>> is_degenerate("You like dark thrillers such as Se7en, so try another one.")
    False
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]")
_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")
DEGENERATE_COVERAGE = 1 / 3


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of ``text``."""
    return _WORD.findall(text.lower())


def is_degenerate(text: str, coverage: float = DEGENERATE_COVERAGE) -> bool:
    """True when one repeated word 3-gram's occurrences cover more than ``coverage`` of the text's words."""
    tokens = words(text)
    if len(tokens) < 6:
        return False
    grams = [tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)]
    top, count = Counter(grams).most_common(1)[0]
    if count < 2:
        return False
    covered = set()
    for i, gram in enumerate(grams):
        if gram == top:
            covered.update((i, i + 1, i + 2))
    return len(covered) > coverage * len(tokens)


def names_history(text: str, titles: Sequence[str], genres: Sequence[str]) -> bool:
    """True when ``text`` names one of the history's titles (its year suffix dropped) or genres, case-blind."""
    lowered = text.lower()
    names = [_YEAR_SUFFIX.sub("", t).strip().lower() for t in titles] + [g.strip().lower() for g in genres]
    return any(len(name) >= 3 and name in lowered for name in names)


def distinct_bigrams(texts: Sequence[str]) -> float:
    """Distinct word bigrams over all word bigrams of ``texts`` (0 when there is none)."""
    grams = [tuple(pair) for text in texts for pair in zip(words(text), words(text)[1:], strict=False)]
    return len(set(grams)) / len(grams) if grams else 0.0


def rationale_quality(
    rationales: Sequence[str],
    stopped: Sequence[bool],
    history_titles: Sequence[Sequence[str]],
    history_genres: Sequence[Sequence[str]],
    fluency: Sequence[float] | None = None,
) -> dict[str, float]:
    """The figures of this module's docstring over one batch or run of rationales (one per user)."""
    n = len(rationales)
    if n == 0:
        return {"n": 0}
    grounded = [names_history(t, ti, g) for t, ti, g in zip(rationales, history_titles, history_genres, strict=True)]
    figures = {
        "n": n,
        "stop_rate": float(np.mean(stopped)),
        "degenerate_share": float(np.mean([is_degenerate(t) for t in rationales])),
        "grounded_share": float(np.mean(grounded)),
        "distinct_2": distinct_bigrams(rationales),
        "mean_words": float(np.mean([len(words(t)) for t in rationales])),
    }
    if fluency is not None and len(fluency) and not np.all(np.isnan(fluency)):
        figures["fluency"] = float(np.nanmean(fluency))
    return figures
