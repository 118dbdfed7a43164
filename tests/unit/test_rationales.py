"""Rationale-quality figures against hand-made texts."""

from __future__ import annotations

import pytest

from r2ec.evaluation.rationales import distinct_bigrams, is_degenerate, names_history, rationale_quality


@pytest.mark.parametrize(
    ("text", "degenerate"),
    [
        ("dogs dogs dogs dogs dogs dogs dogs dogs", True),
        ("a movie a movie a movie a movie a movie", True),
        ("Don't forget to check reviews. Don't forget to check reviews. Don't forget to check reviews.", True),
        ("You rated Heat and Se7en highly, so a dark crime thriller like L.A. Confidential fits.", False),
        ("short", False),
    ],
)
def test_degenerate_means_one_trigram_covers_a_third(text: str, degenerate: bool) -> None:
    assert is_degenerate(text) is degenerate


def test_grounding_finds_titles_without_their_year_and_genres() -> None:
    titles = ["Heat (1995)", "Toy Story (1995)"]
    assert names_history("I see you enjoyed toy story a lot", titles, [])
    assert names_history("Lots of Film-Noir here", [], ["Film-Noir"])
    assert not names_history("Try something new", titles, ["Drama"])


def test_quality_figures_over_a_batch() -> None:
    figures = rationale_quality(
        ["dogs dogs dogs dogs dogs dogs", "You liked Heat, try Ronin.", "You liked Heat, try Ronin."],
        stopped=[False, True, True],
        history_titles=[["Heat (1995)"]] * 3,
        history_genres=[["Crime"]] * 3,
        fluency=[-9.0, -2.0, -2.0],
    )
    assert figures["stop_rate"] == pytest.approx(2 / 3)
    assert figures["degenerate_share"] == pytest.approx(1 / 3)
    assert figures["grounded_share"] == pytest.approx(2 / 3)
    assert figures["fluency"] == pytest.approx(-13 / 3)
    assert distinct_bigrams(["a b c", "a b c"]) == pytest.approx(0.5)
