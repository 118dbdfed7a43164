"""How hard is a cold-start hit on ML-100k's temporal split? Two rankings that know nothing about users.

Trained R²ec rows put 0 to 3 of the 148 cold-start test targets in a top 10 (``benchmarks/results/quality.md``).
This ranks every item by how often it is a target in the test period itself (labels no model may see; history
masked, as for any model) and asks where the new releases land then. If even that oracle places no cold target in a
top 10, a cold hit needs a personal signal strong enough to lift a new item over the whole month's favourites, and a
handful of hits in 148 says little about an item tower either way.

The second ranking needs no labels at all: the newest releases first, within a release year the items nobody chose
in training first, ties in random order (mean over seeds). It shows what the cold slice rewards: putting brand-new
releases in front of everyone, whatever the warm ranking pays for it.

``.venv/bin/python -m studies.cold_ceiling`` writes ``studies/results/cold_ceiling.{json,md}`` in a few seconds.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.report import write_results
from r2ec.data.samples import PreparedData
from r2ec.evaluation.metrics import in_top_k, ranking_metrics, target_ranks
from r2ec.new_item_slots import last_training_year, new_items, release_years
from services.datastore import load_prepared
from services.settings import load_settings
from studies import RESULTS

DATASET = "ml-100k"
TOP_COLD_TARGETS = 8
NEWEST_FIRST_SEEDS = 20


def newest_first_ranks(data: PreparedData, years: np.ndarray, never_chosen: np.ndarray, seed: int) -> np.ndarray:
    """Test target ranks under one list for everyone: release year descending, never-chosen items first within a
    year, random order among the rest of a tie; unknown years last; history masked."""
    noise = np.random.default_rng(seed).random(data.n_items)
    key = np.nan_to_num(years, nan=0.0) * 4 + never_chosen * 2 + noise  # year first, then never-chosen, then chance
    scores = torch.from_numpy(np.tile(key, (len(data.test), 1)))
    return target_ranks(scores, torch.from_numpy(data.test.target), torch.from_numpy(data.test.history)).numpy()


def main() -> None:
    settings = load_settings(progress=False)
    data = load_prepared(settings, DATASET)
    test = data.test
    test_counts = np.bincount(test.target, minlength=data.n_items)
    scores = torch.from_numpy(np.tile(test_counts.astype(np.float32), (len(test), 1)))
    ranks = target_ranks(scores, torch.from_numpy(test.target), torch.from_numpy(test.history)).numpy()
    overall, cold = ranking_metrics(ranks), ranking_metrics(ranks[test.cold])
    never_chosen, years = new_items(data), release_years(data)
    popularity_rank = (test_counts >= test_counts[:, None]).sum(axis=1)  # ties count against, as in target_ranks
    cold_targets, cold_counts = np.unique(test.target[test.cold], return_counts=True)
    figures: dict[str, float | str] = {
        "test samples": len(test),
        "cold-start test samples": int(test.cold.sum()),
        "items nobody chose in training": int(never_chosen.sum()),
        "distinct cold-start targets": len(cold_targets),
        "oracle: test NDCG@10": round(overall["ndcg@10"], 4),
        "oracle: test HR@10": round(overall["hr@10"], 4),
        "oracle: cold NDCG@10": round(cold["ndcg@10"], 4),
        "oracle: cold targets in the top 10": int(in_top_k(ranks[test.cold], 10).sum()),
        "oracle: best rank of any never-chosen item": int(popularity_rank[never_chosen].min()),
    }
    newest = [newest_first_ranks(data, years, never_chosen, seed) for seed in range(NEWEST_FIRST_SEEDS)]
    newest_hits = [int(in_top_k(r[test.cold], 10).sum()) for r in newest]
    figures["newest first: test NDCG@10 (mean over seeds)"] = round(
        float(np.mean([ranking_metrics(r)["ndcg@10"] for r in newest])), 4
    )
    figures["newest first: warm test targets in the top 10 (mean)"] = round(
        float(np.mean([in_top_k(r[~test.cold], 10).sum() for r in newest])), 1
    )
    figures["newest first: cold targets in the top 10 (mean, min-max)"] = (
        f"{np.mean(newest_hits):.1f}, {min(newest_hits)}-{max(newest_hits)}"
    )
    last_year = last_training_year(data)
    figures[f"cold targets released in {last_year}"] = int((years[test.target[test.cold]] == last_year).sum())
    figures[f"never-chosen items released in {last_year} / {last_year - 1} / earlier or unknown"] = (
        f"{(never_chosen & (years == last_year)).sum()} / {(never_chosen & (years == last_year - 1)).sum()} / "
        f"{(never_chosen & ~(years >= last_year - 1)).sum()}"
    )
    for item in cold_targets[np.argsort(-cold_counts, kind="stable")][:TOP_COLD_TARGETS]:
        row = data.items.iloc[item]
        figures[f"'{row['title']}' ({row['year']}): test targets, oracle rank"] = (
            f"{test_counts[item]}, {popularity_rank[item]}"
        )
    notes = [
        "Oracle = every item scored by its count of test-period targets (the answers of the very split it is scored "
        "on), history masked; no model can have this. It is the one ranking for everyone that best fits the month, "
        "and it has no room for a new release in a top 10: a ranking that puts one there either ranks new items "
        "above the month's favourites for everyone (paying in warm hits: the new-item slot) or knows who picks them.",
        "For comparison, quality.md's trained contrastive checkpoint puts the cold targets at median rank 461.5 "
        "(wise_ft.md, float32), the untrained model at 1065.5 (cold_start.md).",
        "'Newest first' is one list for everyone built from item metadata and the training log alone (release year, "
        "never chosen in training): no personal signal, no test label. Its cold hits against its warm ones show what "
        "the cold-start slice rewards; it is a reference, not a recommender anyone should serve.",
        f"The oracle is deterministic; 'newest first' breaks ties with {NEWEST_FIRST_SEEDS} seeds (0 to "
        f"{NEWEST_FIRST_SEEDS - 1}).",
    ]
    write_results("cold_ceiling", ".venv/bin/python -m studies.cold_ceiling", figures, notes, RESULTS)


if __name__ == "__main__":
    main()
