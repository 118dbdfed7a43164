"""Training configuration: one documented dataclass, checked once (in the spirit of TRL's GRPOConfig)."""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("recpo", "contrastive", "zero-shot")


@dataclass(frozen=True)
class TrainConfig:
    """How to train R²ec.

    Parameters that control the run:
        mode: ``recpo`` (reasoning + fused reward), ``contrastive`` (the "w/o reasoning" ablation) or
            ``zero-shot`` (no training: the backbone's own vectors).
        seed: seeds sampling of batches, negatives and rollouts.
        max_steps / max_samples / max_minutes: the run stops at whichever budget is reached first.
        batch_size: users per optimizer step (paper 12-24).
        learning_rate, weight_decay, max_grad_norm: AdamW and gradient clipping (paper: lr 1e-5, clip 1.0;
            a 135M model with top-layer LoRA learns faster with a larger lr).
        warmup_steps: the learning rate rises linearly from 0 over these steps, then stays constant (runs stop
            on a time budget, so there is no known end to decay towards).
        recency_half_life_days: draw each batch's samples with a weight that halves every this many days
            before the training window's last target (None: shuffled epochs, every sample alike). A CPU budget
            covers a fraction of an epoch; this spends it on the samples nearest the window the model will serve.
        new_release_weight: multiply the draw weight of each sample whose target came out in the sample's own
            calendar year or later (the catalogue's ``year``) by this; 1 leaves the draws alone. New releases
            take a growing share of choices over time (ML-100k: 0.4% of training targets are 1998 releases, 2.9%
            of the April 1998 test targets) and the cold-start slice is mostly made of them; the weight is meant
            to teach the text tower what a new release looks like instead of leaving it to the few late samples.

    What each switch measured on ML-100k (recency, new-release weight, item and negative gradients, negatives
    from training targets) is in ``docs/decisions.md`` and ``studies/results/*_ablation.md``; the recipes of
    ``r2ec.training.recipes`` set the values the product trains with.

    Parameters of RecPO (method.md §3):
        group_size: rollouts per user (G).
        temperature, top_k, max_new_tokens: sampling of the rollouts' reasoning.
        beta: weight of the similarity reward in the fused reward.
        rank_cutoff: ranks beyond it earn no rank reward (NDCG@1000).
        clip_low, clip_high: PPO clip range (the single update per batch makes the ratio 1).
        item_loss_top: how many best rollouts per group also get the item loss.

    Parameters of the item loss:
        n_negatives: items drawn as extra candidates beyond the batch's targets, re-encoded with the current
            adapters. More negatives than the batch avoid the collapse of method.md §7.
        negative_gradients: let the item loss push negatives away, not only pull targets in (without it an item
            that is seldom a target never moves down). Costs the backward of ``n_negatives`` short item prompts
            through the LoRA layers.
        item_gradients: let the item loss train the item tower at all. Off, the candidates' vectors are read with
            the current adapters but without grad: the adapters learn only from the user side, so no item is
            rewarded for having been chosen in the training window (the suspected reason why items nobody chose
            there, the cold-start slice, sink below every chosen one); ``negative_gradients`` is then moot.
        popularity_negatives: draw negatives by training popularity (else uniformly).
        negatives_from_train_targets: draw negatives only among items that are a training target. An item nobody
            chose in the training window (often not released yet) is otherwise taught to be unwanted, and the
            logQ correction makes each such draw a strong push down; the cold-start slice is made of such items.
        upcoming_targets: contrastive mode only: each user prompt is trained towards its target and the same
            user's next ``upcoming_targets - 1`` training targets, each a positive of its own softmax with the
            others masked out (a dense "all upcoming actions" loss, as in Pinterest's PinnerFormer). The user
            forward is most of a CPU step; this gives it several targets' worth of supervision for the price of
            a few more short item prompts through the LoRA layers.
        served_reasoning: contrastive mode only: read each user vector where the service reads it when the
            untouched backbone writes the rationale (``R2ecConfig.reasoning_writer="backbone"``): after prompt +
            the backbone's reasoning + ``<answer>``, instead of right after the prompt. Neither the backbone's text
            nor the layers below the adapters change while the adapters train, so each prompt's reasoning and the
            states entering the first adapted layer are computed once (one generation per new prompt) and a step
            runs only the adapted layers on them.
        sampling_correction: subtract from each candidate's logit the log of its expected count among the
            candidates (logQ correction, Yi et al. 2019). Targets and popularity-drawn negatives over-represent
            popular items; uncorrected, the sampled softmax learns to demote them, although the full-catalogue
            ranking at inference should not.

    Parameters of evaluation:
        eval_every: steps between validations (and full item-table refreshes).
        eval_samples: size of the fixed, seeded validation subset.
        patience: evaluations without improvement of validation NDCG@10 before stopping.
    """

    mode: str = "contrastive"
    seed: int = 0
    max_steps: int = 200
    max_samples: int | None = None
    max_minutes: float | None = None
    batch_size: int = 16
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    recency_half_life_days: float | None = None
    new_release_weight: float = 1.0

    group_size: int = 4
    temperature: float = 1.5
    top_k: int = 50
    max_new_tokens: int = 32
    beta: float = 0.05
    rank_cutoff: int = 1000
    clip_low: float = 0.2
    clip_high: float = 0.28
    item_loss_top: int = 1

    n_negatives: int = 64
    negative_gradients: bool = True
    item_gradients: bool = True
    popularity_negatives: bool = True
    negatives_from_train_targets: bool = False
    upcoming_targets: int = 1
    served_reasoning: bool = False
    sampling_correction: bool = True

    eval_every: int = 25
    eval_samples: int = 300
    patience: int = 4

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2 (the item loss contrasts the batch's targets)")
        if self.mode == "recpo" and self.group_size < 2:
            raise ValueError("recpo needs group_size >= 2: advantages are normalised within a group")
        if not 1 <= self.item_loss_top <= self.group_size:
            raise ValueError("item_loss_top must be between 1 and group_size")
        if not 0 <= self.beta <= 1:
            raise ValueError("beta must be in [0, 1]")
        if self.upcoming_targets < 1 or (self.upcoming_targets > 1 and self.mode != "contrastive"):
            raise ValueError("upcoming_targets must be >= 1, and 1 outside contrastive mode (rewards rank one target)")
        if self.served_reasoning and self.mode != "contrastive":
            raise ValueError("served_reasoning is a contrastive-mode option (RecPO samples its own reasoning)")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if self.recency_half_life_days is not None and self.recency_half_life_days <= 0:
            raise ValueError("recency_half_life_days must be > 0 (or None for uniform epochs)")
        if self.new_release_weight <= 0:
            raise ValueError("new_release_weight must be > 0 (1 leaves the draws alone)")
        if self.max_steps < 1 or self.eval_every < 1 or self.patience < 1:
            raise ValueError("max_steps, eval_every and patience must be >= 1")
