"""Which new items should the new-item slot show? One checkpoint scored once, several slot policies compared.

Most of ML-100k's cold-start slice is new releases: 114 of its 148 test targets came out in 1998, while 31 of the
66 items nobody chose in training are back-catalogue films that nobody picks. This scores a checkpoint once on
quality.md's seeded test rows (2,000 + all 148 cold ones) and on seeded validation rows (300 + all 53 cold ones),
then applies each policy to the same scores: the model alone, and 1 or 2 slots filled from all never-chosen items
or only from those released at most Y years before the training window's last year
(``r2ec.new_item_slots.new_items``). Beside each policy, the same slots filled by a uniform pick within its pool
(the model's list otherwise unchanged; exact expectation and tail): what the model's choice adds over luck.

``.venv/bin/python -m studies.slot_policies CHECKPOINT`` writes ``studies/results/slot_policies.{json,md,png}``;
about 25 minutes on a 2-core CPU in float32 for a contrastive checkpoint, 35 for a RecPO one (it writes a
reasoning per user), nearly all of it scoring.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.report import invocation, write_results
from r2ec.data.samples import Samples
from r2ec.evaluation.evaluator import evaluation_subset
from r2ec.evaluation.metrics import in_top_k, mask_history, ranking_metrics, target_ranks
from r2ec.new_item_slots import new_items, reserve_new_item_slots
from r2ec.recommender import Recommender
from services.datastore import load_prepared
from services.jobs.evaluate import build_r2ec
from services.settings import load_settings
from studies import RESULTS

DATASET = "ml-100k"
K = 10
POLICIES: tuple[tuple[int, int | None], ...] = ((1, None), (1, 1), (1, 0), (2, None), (2, 1), (2, 0))


@torch.no_grad()
def masked_scores(model: Recommender, samples: Samples, batch_size: int, split: str) -> torch.Tensor:
    """(n, n_items) float32 scores of every sample, its history at -inf."""
    chunks = []
    for start in tqdm(range(0, len(samples), batch_size), desc=f"scoring {split}"):
        batch = samples.take(slice(start, start + batch_size))
        chunks.append(mask_history(model.full_sort_predict(batch), torch.from_numpy(batch.history)))
    return torch.cat(chunks)


def ranks_under(scores: torch.Tensor, samples: Samples, pool: np.ndarray | None, slots: int) -> np.ndarray:
    """Target ranks once ``slots`` places of each top K go to the best-scored items of ``pool`` (none: as scored)."""
    if pool is not None:
        scores = reserve_new_item_slots(scores, torch.from_numpy(pool), slots, K)
    return target_ranks(scores, torch.from_numpy(samples.target), torch.from_numpy(samples.history)).numpy()


def random_pick_chance(scores: torch.Tensor, target: int, pool: np.ndarray, slots: int) -> float:
    """Probability that ``target`` ends in the top K of one row when the reserved places go to pool items drawn
    uniformly among those the model's own top K lacks (the rest of the list as in ``reserve_new_item_slots``)."""
    finite = torch.isfinite(scores).numpy()
    top = [int(i) for i in scores.topk(min(K, len(scores))).indices if finite[i]]
    n_new = sum(bool(pool[i]) for i in top)
    candidates = pool & finite
    candidates[top] = False
    extra = min(max(slots - n_new, 0), int(candidates.sum()))
    if target in top:
        if pool[target]:
            return 1.0
        kept_old = [i for i in top if not pool[i]][: K - extra - n_new]
        return float(target in kept_old)
    return extra / candidates.sum() if candidates[target] else 0.0


def random_pick_figures(
    scores: torch.Tensor, samples: Samples, pool: np.ndarray, slots: int, hits: int
) -> tuple[float, float]:
    """Expected top-K hits of a random pick, and the chance that it scores at least ``hits`` (exact: the hits are
    independent Bernoulli draws, one per sample, so their count is Poisson-binomial)."""
    chances = [random_pick_chance(scores[row], int(samples.target[row]), pool, slots) for row in range(len(samples))]
    distribution = np.ones(1)
    for chance in chances:
        distribution = np.convolve(distribution, [1.0 - chance, chance])
    return round(float(np.sum(chances)), 2), float(distribution[hits:].sum())


def constant_pick_hits(scores: torch.Tensor, samples: Samples, pool: np.ndarray) -> np.ndarray:
    """Top-K hits, for each pool item, when one reserved place shows that same item to everyone (the next item of
    one fixed, seeded order where a user has seen it; the model's own list otherwise): a pick without any personal
    signal, whose luck depends on which item it is."""
    finite = torch.isfinite(scores)
    listed = torch.zeros_like(finite).scatter_(1, scores.topk(K, dim=1).indices, True)
    floor = scores[finite].min() - 2.0
    fixed_order = torch.from_numpy(np.random.default_rng(0).random(len(pool))).float()  # in [0, 1): below the pick
    lowered = torch.where(torch.from_numpy(pool) & finite & ~listed, floor + fixed_order, scores)
    hits = []
    for item in np.flatnonzero(pool):
        forced = lowered.clone()
        forced[:, item] = torch.where(finite[:, item] & ~listed[:, item], floor + 1.0, forced[:, item])
        hits.append(in_top_k(ranks_under(forced, samples, pool, 1), K).sum())
    return np.array(hits)


def shown_items(scores: torch.Tensor, pool: np.ndarray, slots: int) -> int:
    """How many distinct pool items the policy's top K lists show across the rows of ``scores``."""
    top = reserve_new_item_slots(scores, torch.from_numpy(pool), slots, K).topk(K, dim=1).indices
    return len({int(i) for i in top.flatten() if pool[i]})


def pool_label(pool: np.ndarray, max_age_years: int | None) -> str:
    size = int(pool.sum())
    if max_age_years is None:
        return f"never chosen ({size})"
    return f"never chosen, released <= {max_age_years} y before the window's last year ({size})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a trained RUN/contrastive/best (or recpo/best) folder")
    parser.add_argument("--n-test", type=int, default=2000, help="seeded test samples (plus all cold ones)")
    parser.add_argument("--valid-samples", type=int, default=300, help="seeded validation samples (plus its cold ones)")
    parser.add_argument("--name", default="slot_policies", help="results file stem under studies/results")
    args = parser.parse_args()
    settings = load_settings(progress=False)
    data = load_prepared(settings, DATASET)
    model, model_name = build_r2ec(settings, data, args.checkpoint)
    model.fit(data)
    splits = {
        "valid": evaluation_subset(data.valid, args.valid_samples, settings.seed),
        "test": evaluation_subset(data.test, args.n_test, settings.seed),
    }
    scores = {split: masked_scores(model, s, settings.inference_batch_size, split) for split, (s, _) in splits.items()}

    figures: dict[str, float | str] = {"model": f"{model_name} ({args.checkpoint})"}
    for split, (samples, overall) in splits.items():
        figures[f"{split}: seeded samples, cold samples"] = f"{int(overall.sum())}, {int(samples.cold.sum())}"
    per_policy: dict[str, dict[str, float | str]] = {}
    for slots, max_age in [(0, None), *POLICIES]:
        pool = None if slots == 0 else new_items(data, max_age)
        label = "model alone" if pool is None else f"{slots} slot(s), {pool_label(pool, max_age)}"
        row: dict[str, float | str] = {}
        for split, (samples, overall) in splits.items():
            ranks = ranks_under(scores[split], samples, pool, slots)
            cold = samples.cold
            row[f"{split} NDCG@10"] = round(ranking_metrics(ranks[overall], (K,))["ndcg@10"], 4)
            row[f"{split} cold NDCG@10"] = round(ranking_metrics(ranks[cold], (K,))["ndcg@10"], 4)
            row[f"{split} cold hits"] = int(in_top_k(ranks[cold], K).sum())
            if pool is not None:
                cold_scores, cold_samples = scores[split][cold], samples.take(np.flatnonzero(cold))
                hits = row[f"{split} cold hits"]
                expected, tail = random_pick_figures(cold_scores, cold_samples, pool, slots, hits)
                row[f"{split} cold hits, random pick (expected)"] = expected
                row[f"{split} P(random pick >= the model's cold hits)"] = float(f"{tail:.2g}")
                row[f"{split} distinct new items shown to cold users"] = shown_items(cold_scores, pool, slots)
                if slots == 1:
                    constant = constant_pick_hits(cold_scores, cold_samples, pool)
                    row[f"{split} cold hits, one item for everyone (mean, max)"] = (
                        f"{constant.mean():.2f}, {constant.max()}"
                    )
                    row[f"{split} P(one item for everyone >= the model's cold hits)"] = round(
                        float((constant >= hits).mean()), 3
                    )
        per_policy[label] = row
        figures.update({f"{label}: {figure}": value for figure, value in row.items()})
    notes = [
        "Each policy is applied to the same scores (one scoring pass per split), so differences between rows are "
        "the policy's alone. 'random pick' gives the same reserved places to pool items drawn uniformly and keeps "
        "the model's list otherwise; its expected hits and the chance of matching the model's are exact "
        "(Poisson-binomial over the cold samples), not simulated. 'one item for everyone' (1 slot only) shows the "
        "same pool item to every user, each pool item in turn: no personal signal, but a lucky item scores high "
        "because cold targets crowd on a few new releases; P is the share of pool items that reach the model's hits.",
        "Test rows: quality.md's seeded 2,000 + all 148 cold-start samples (overall NDCG@10 on the 2,000 only, "
        "cold figures on the 148); validation: the seeded rows of wise_ft.md plus its 53 cold ones.",
        f"Weights dtype: {model.config.dtype}; one scoring run.",
    ]
    write_results(args.name, invocation("studies.slot_policies"), figures, notes, RESULTS)
    plot_policies(per_policy, RESULTS / f"{args.name}.png")


def plot_policies(per_policy: dict[str, dict[str, float | str]], out: Path) -> None:
    """Cold-start hits per policy, the model's pick beside a random pick in the same pool; warm cost in the labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{label}\ntest NDCG@10 {row['test NDCG@10']:.4f}" for label, row in per_policy.items()]
    model = [row["test cold hits"] for row in per_policy.values()]
    luck = [row.get("test cold hits, random pick (expected)", 0.0) for row in per_policy.values()]
    positions = np.arange(len(labels))
    figure, axes = plt.subplots(figsize=(9, 0.7 * len(labels) + 1.2))
    axes.barh(positions - 0.2, model, height=0.4, color="tab:blue", label="the model's pick")
    axes.barh(positions + 0.2, luck, height=0.4, color="tab:gray", label="a random pick in the same pool (expected)")
    axes.set_yticks(positions, labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("cold-start test targets in the top 10 (of 148)")
    axes.set_title("New-item slots: which pool, and what the model's choice adds over luck", fontsize=10)
    axes.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    figure.savefig(out, dpi=120)


if __name__ == "__main__":
    main()
