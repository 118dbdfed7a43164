"""The R²ec trainer: RecPO and the contrastive ablation, one optimizer step per batch of users.

Generation, reward computation and the loss live in separate methods (``_generate``,
``_calculate_rewards``, ``_recpo_loss``), as in TRL's GRPO trainer. The frozen lower layers of every item
prompt are computed once (:class:`FrozenLayerCache`), so re-encoding items with gradient and refreshing the
whole item table only run the LoRA layers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup

from r2ec.data.samples import PAD, PreparedData, Samples
from r2ec.evaluation.evaluator import sample_ranks
from r2ec.evaluation.metrics import mask_history, ranking_metrics, target_ranks
from r2ec.modeling.generation import GenerationSettings, Rollouts, generate_rollouts, left_pad
from r2ec.modeling.recommender import FrozenLayerCache, R2ecConfig, R2ecRecommender
from r2ec.modeling.scoring import cosine_scores
from r2ec.modeling.vectors import (
    at_last_token,
    decoder_and_head,
    hidden_states,
    last_hidden_from_layer,
)
from r2ec.training.config import TrainConfig
from r2ec.training.logging import MetricsLogger
from r2ec.training.losses import item_softmax_loss, policy_token_loss, sampling_log_q, token_logprobs
from r2ec.training.rewards import fused_reward, group_advantages, rank_reward, similarity_reward

BEST_DIR = "best"


@dataclass(frozen=True)
class Candidates:
    """The item side of one step's item loss, one row per (user, positive) pair.

    ``items`` (C,) catalogue indices of the batch's positives then sampled negatives, ``vectors`` (C, d) their
    unit vectors; ``users`` (P,) the batch row of each pair; ``labels`` (P,) its positive among the candidates;
    ``history_mask`` (P, C) True where a candidate must not compete (in the user's history, or another positive
    of the same user); ``log_q`` (C,) the sampling correction subtracted from each candidate's logit (None:
    uncorrected). With one positive per user (RecPO, plain contrastive), pair i is batch row i.
    """

    items: np.ndarray
    vectors: torch.Tensor
    users: torch.Tensor
    labels: torch.Tensor
    history_mask: torch.Tensor
    log_q: torch.Tensor | None


@dataclass
class TrainResult:
    """What a run produced and what it cost."""

    best_dir: Path
    best_valid_ndcg10: float
    budget: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


def negative_distribution(counts: np.ndarray, by_popularity: bool, train_targets_only: bool) -> np.ndarray:
    """(n_items,) probabilities of drawing each item as a negative, from its training-target ``counts``.

    By popularity (count + 1) or uniform; ``train_targets_only`` gives items with no training target zero.
    """
    weights = counts + 1.0 if by_popularity else np.ones_like(counts)
    if train_targets_only:
        weights = weights * (counts > 0)
    return weights / weights.sum()


def recency_weights(times: np.ndarray, half_life_days: float | None) -> np.ndarray | None:
    """Sampling probabilities halving every ``half_life_days`` before the latest of ``times`` (seconds); None
    when no half-life is given."""
    if half_life_days is None:
        return None
    age_days = (times.max() - times) / 86400.0
    weights = np.exp2(-age_days / half_life_days)
    return weights / weights.sum()


def new_releases(target_time: np.ndarray, target_year: np.ndarray) -> np.ndarray:
    """(n,) bool: the target came out in the calendar year (UTC) of the sample's ``target_time`` (seconds) or
    later; an unknown year (NaN) is never new."""
    sample_year = np.asarray(target_time, dtype="datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
    return target_year >= sample_year


def item_years(items: pd.DataFrame) -> np.ndarray | None:
    """(n_items,) float release years of the catalogue (NaN where unknown); None when it has no ``year``."""
    if "year" not in items.columns:
        return None
    return items["year"].to_numpy(dtype=np.float64, na_value=np.nan)


def draw_weights(train: Samples, item_year: np.ndarray | None, config: TrainConfig) -> np.ndarray | None:
    """Sampling probabilities of the training samples (recency, new-release weight); None for shuffled epochs."""
    weights = recency_weights(train.target_time, config.recency_half_life_days)
    if config.new_release_weight == 1.0:
        return weights
    if item_year is None:
        raise ValueError("new_release_weight needs the catalogue's release years (an items 'year' column)")
    if weights is None:
        weights = np.full(len(train), 1.0 / len(train))
    new = new_releases(train.target_time, item_year[train.target])
    weights = weights * np.where(new, config.new_release_weight, 1.0)
    return weights / weights.sum()


def phase_model_config(model: R2ecConfig, phase: TrainConfig) -> R2ecConfig:
    """The model a phase trains, and its checkpoint is served as: with reasoning for RecPO and served_reasoning,
    whose checkpoints the service serves with the backbone writing the reasoning."""
    reasoning = phase.mode == "recpo" or phase.served_reasoning
    writer = "backbone" if phase.served_reasoning else model.reasoning_writer
    return replace(model, reasoning=reasoning, reasoning_writer=writer)


class R2ecTrainer:
    """Trains the LoRA adapters of an :class:`R2ecRecommender` on a prepared dataset."""

    def __init__(
        self,
        recommender: R2ecRecommender,
        data: PreparedData,
        config: TrainConfig,
        logger: MetricsLogger | None = None,
        progress: bool = False,
        item_cache: FrozenLayerCache | None = None,
    ) -> None:
        """``item_cache`` may be shared between trainers of one backbone with the same LoRA layers."""
        if config.mode == "zero-shot":
            raise ValueError("zero-shot mode has nothing to train: evaluate the untrained model instead")
        reasoning = config.mode == "recpo" or config.served_reasoning
        if recommender.config.reasoning != reasoning:
            raise ValueError(f"this {config.mode} phase needs a recommender with reasoning={reasoning}")
        backbone_writes = recommender.config.reasoning_writer == "backbone" and recommender.frozen_layers > 0
        if config.served_reasoning and not backbone_writes:
            raise ValueError("served_reasoning needs reasoning_writer='backbone' and layers below the adapters")
        self.recommender, self.data, self.config = recommender, data, config
        self.logger, self.progress = logger, progress
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        model = recommender.model
        self.item_cache = item_cache or FrozenLayerCache(recommender, recommender.item_prompt_ids(data.items))
        counts = data.train_target_counts().astype(np.float64)
        target_probs = (counts + 1.0) / (counts + 1.0).sum()
        self.negative_probs = negative_distribution(
            counts, config.popularity_negatives, config.negatives_from_train_targets
        )
        self.log_q = None
        if config.sampling_correction:
            n_negatives = min(config.n_negatives, int(np.count_nonzero(self.negative_probs)))
            n_positives = config.batch_size * config.upcoming_targets
            self.log_q = sampling_log_q(target_probs, self.negative_probs, n_positives, n_negatives)
        self.upcoming = data.train.upcoming_targets(config.upcoming_targets)
        self.served_states: dict[tuple[int, ...], torch.Tensor] = {}  # prompt -> its served context (served_reasoning)
        self.draw_probs = draw_weights(data.train, item_years(data.items), config)
        n_valid = min(config.eval_samples, len(data.valid))
        self.valid = data.valid.take(np.sort(self.rng.choice(len(data.valid), n_valid, replace=False)))
        self.valid_cache = self.user_cache(self.valid)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = get_constant_schedule_with_warmup(self.optimizer, config.warmup_steps)
        self.rollout_settings = GenerationSettings(
            max_new_tokens=config.max_new_tokens,
            do_sample=True,
            temperature=config.temperature,
            top_k=config.top_k,
            batch_size=recommender.config.generation.batch_size,
        )
        self.item_table_built = False  # by this trainer: refitted before the first step and at every validation
        self.budget = {
            "steps": 0,
            "skipped_steps": 0,
            "samples": 0,
            "rollouts": 0,
            "reasoning_tokens": 0,
            "wall_s": 0.0,
        }

    # item side --------------------------------------------------------------------------------------

    def refresh_item_table(self) -> None:
        """Rebuild every item vector with the current adapters and refit the centring vector."""
        self.recommender.set_item_table(self.data.items, self.item_cache.all_last_hidden(), refit_mean=True)
        self.item_table_built = True

    def _candidates(self, batch: Samples, positives: np.ndarray) -> Candidates:
        """Candidate item vectors for the item loss: the batch's ``positives`` ((B, k), PAD-filled) and negatives.

        Every candidate is re-encoded with the current adapters (only the LoRA layers run, from the frozen-layer
        cache): stale vectors from the item table would offer a shortcut, since fresh vectors share the adapters'
        latest drift. Negatives carry gradient unless ``negative_gradients`` is off; without it only targets move,
        and an item that is seldom a target is never pushed down (a popularity-only log is then not learnt).
        With ``item_gradients`` off no candidate carries gradient. The fresh vectors also replace their rows of the
        item table, which RecPO's rewards rank against.
        """
        if not self.item_table_built:
            self.refresh_item_table()
        device = self.recommender.device
        pair_user, pair_slot = np.nonzero(positives != PAD)
        pair_item = positives[pair_user, pair_slot]
        targets = np.unique(pair_item)
        pool = np.setdiff1d(np.flatnonzero(self.negative_probs), targets)
        n_neg = min(self.config.n_negatives, len(pool))
        probs = self.negative_probs[pool] / self.negative_probs[pool].sum()
        negatives = np.sort(self.rng.choice(pool, n_neg, replace=False, p=probs))
        with torch.set_grad_enabled(self.config.item_gradients):
            target_raw = self.item_cache.last_hidden(targets.tolist())
        with torch.set_grad_enabled(self.config.item_gradients and self.config.negative_gradients):
            negative_raw = self.item_cache.last_hidden(negatives.tolist())
        ids = np.concatenate([targets, negatives])
        vectors = self.recommender.project(torch.cat([target_raw, negative_raw]))
        self.recommender.item_table[torch.from_numpy(ids)] = vectors.detach().cpu()
        labels = np.searchsorted(targets, pair_item)
        excluded = np.concatenate([batch.history, positives], axis=1)[pair_user]
        masked = (excluded[:, :, None] == ids[None, None, :]).any(axis=1)
        masked[np.arange(len(labels)), labels] = False
        log_q = None if self.log_q is None else self.log_q[torch.from_numpy(ids)].to(device)
        return Candidates(
            ids,
            vectors,
            torch.from_numpy(pair_user).to(device),
            torch.from_numpy(labels).to(device),
            torch.from_numpy(masked).to(device),
            log_q,
        )

    # RecPO ------------------------------------------------------------------------------------------

    def _generate(self, batch: Samples) -> Rollouts:
        """``group_size`` sampled reasonings per user, consecutive rows per user."""
        prompts = self.recommender.user_prompt_ids(batch, self.data.items)
        return generate_rollouts(
            self.recommender.model,
            self.recommender.tokenizer,
            prompts,
            self.rollout_settings,
            num_return_sequences=self.config.group_size,
        )

    def _calculate_rewards(self, users: torch.Tensor, batch: Samples) -> dict[str, torch.Tensor]:
        """Rank, similarity and fused rewards of each rollout (unit user vectors, no grad), and advantages."""
        repeat = np.repeat(np.arange(len(batch)), self.config.group_size)
        history = torch.from_numpy(batch.history[repeat])
        target = torch.from_numpy(batch.target[repeat])
        scores = cosine_scores(users, self.recommender.item_table, self.recommender.config.tau)
        ranks = target_ranks(scores, target, history)
        rank_r = rank_reward(ranks, self.config.rank_cutoff)
        similarity_r = similarity_reward(mask_history(scores, history), target)
        fused = fused_reward(rank_r, similarity_r, self.config.beta)
        return {
            "ranks": ranks,
            "rank_reward": rank_r,
            "similarity_reward": similarity_r,
            "reward": fused,
            "advantages": group_advantages(fused, self.config.group_size),
        }

    def _recpo_loss(self, batch: Samples, positives: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        rollouts = self._generate(batch)
        model, device = self.recommender.model, self.recommender.device
        ids, mask = rollouts.input_ids.to(device), rollouts.attention_mask.to(device)
        completion = rollouts.completion_mask.to(device)
        states = hidden_states(model, ids, mask)
        candidates = self._candidates(batch, positives)
        users = self.recommender.project(at_last_token(states, mask))
        rewards = self._calculate_rewards(users.detach().cpu(), batch)
        advantages = rewards["advantages"].to(device)

        _, lm_head = decoder_and_head(model)
        actions = completion[:, 1:].bool()
        picked = token_logprobs(lm_head(states[:, :-1][actions]), ids[:, 1:][actions])
        logprobs = torch.zeros(actions.shape, dtype=picked.dtype, device=device).masked_scatter(actions, picked)
        logprobs = torch.nn.functional.pad(logprobs, (1, 0))
        token_loss, _ = policy_token_loss(
            logprobs, logprobs.detach(), advantages, completion, self.config.clip_low, self.config.clip_high
        )

        groups = rewards["reward"].view(-1, self.config.group_size)
        best = groups.topk(self.config.item_loss_top, dim=1).indices + (
            torch.arange(len(batch))[:, None] * self.config.group_size
        )
        best = best.reshape(-1)
        per_user = best // self.config.group_size
        item_loss = item_softmax_loss(
            users[best],
            candidates.vectors,
            candidates.labels[per_user],
            advantages[best],
            self.recommender.config.tau,
            candidates.history_mask[per_user],
            candidates.log_q,
        )
        self.budget["rollouts"] += len(rollouts.rationales)
        self.budget["reasoning_tokens"] += int(completion.sum())
        stats = {
            "token_loss": token_loss.item(),
            "item_loss": item_loss.item(),
            "reward": float(rewards["reward"].mean()),
            "rank_reward": float(rewards["rank_reward"].mean()),
            "median_rank": float(rewards["ranks"].float().median()),
            "reasoning_tokens_per_rollout": float(completion.sum(dim=1).float().mean()),
        }
        return token_loss + item_loss, stats

    # contrastive ------------------------------------------------------------------------------------

    def _served_context(self, prompts: list[list[int]]) -> list[torch.Tensor]:
        """Each prompt's states entering the first adapted layer over prompt + the backbone's reasoning +
        ``<answer>`` (served_reasoning), generated for the prompts not seen before."""
        keys = [tuple(prompt) for prompt in prompts]
        new = list(dict.fromkeys(key for key in keys if key not in self.served_states))
        if new:
            rollouts = self.recommender.backbone_reasoning([list(key) for key in new])
            self.served_states.update(zip(new, rollouts.layer_states, strict=True))
            self.budget["reasoning_tokens"] += int(rollouts.completion_mask.sum())
        return [self.served_states[key] for key in keys]

    def _contrastive_loss(self, batch: Samples, positives: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        device, model = self.recommender.device, self.recommender.model
        prompts = self.recommender.user_prompt_ids(batch, self.data.items)
        if self.config.served_reasoning:
            raw = last_hidden_from_layer(model, self._served_context(prompts), self.recommender.frozen_layers)
        else:
            ids, mask = left_pad(prompts, self.recommender.tokenizer.pad_token_id)
            ids, mask = ids.to(device), mask.to(device)
            raw = at_last_token(hidden_states(model, ids, mask), mask)
        candidates = self._candidates(batch, positives)
        batch_users = self.recommender.project(raw)
        users = batch_users[candidates.users]  # one row per (user, positive) pair
        weights = torch.ones(len(users), device=device)
        tau = self.recommender.config.tau
        loss = item_softmax_loss(
            users, candidates.vectors, candidates.labels, weights, tau, candidates.history_mask, candidates.log_q
        )
        with torch.no_grad():
            spread = cosine_scores(batch_users.cpu(), self.recommender.item_table, tau).std(dim=1).mean()
            # the loss of scores that ignore the user (all equal): what a run that learns nothing converges to
            chance = item_softmax_loss(
                torch.zeros_like(users),
                candidates.vectors,
                candidates.labels,
                weights,
                tau,
                candidates.history_mask,
                candidates.log_q,
            )
        return loss, {"item_loss": loss.item(), "chance_loss": chance.item(), "score_spread": float(spread)}

    # loop -------------------------------------------------------------------------------------------

    def user_cache(self, samples: Samples) -> FrozenLayerCache | None:
        """Frozen-layer cache of fixed user contexts: the prompts, or with served_reasoning prompt + the
        backbone's reasoning + ``<answer>``; None in RecPO mode (the reasoning changes as the adapter trains)."""
        prompts = self.recommender.user_prompt_ids(samples, self.data.items)
        if self.config.served_reasoning:
            rollouts = self.recommender.backbone_reasoning(prompts)
            cache = FrozenLayerCache(self.recommender, rollouts.sequences())
            cache.states = dict(enumerate(rollouts.layer_states))
            return cache
        if self.recommender.config.reasoning:
            return None
        return FrozenLayerCache(self.recommender, prompts)

    def sample_ranks(self, samples: Samples, cache: FrozenLayerCache | None = None) -> np.ndarray:
        """Target ranks with the current adapters (fresh item table); ``cache`` skips the frozen layers."""
        self.refresh_item_table()
        if cache is None:
            return sample_ranks(self.recommender, samples, batch_size=32)
        users = self.recommender.project(cache.all_last_hidden())
        scores = cosine_scores(users, self.recommender.item_table, self.recommender.config.tau)
        return target_ranks(scores, torch.from_numpy(samples.target), torch.from_numpy(samples.history)).numpy()

    def evaluate_valid(self) -> dict[str, float]:
        """NDCG/HR@K on the fixed validation subset with the current adapters and a fresh item table."""
        ranks = self.sample_ranks(self.valid, self.valid_cache)
        return {f"valid_{k}": v for k, v in ranking_metrics(ranks).items()}

    def _batches(self) -> Iterator[tuple[Samples, np.ndarray]]:
        """Training batches, endlessly: the samples and their (B, upcoming_targets) positives.

        Shuffled epochs, or with ``recency_half_life_days`` or ``new_release_weight`` independent weighted draws
        (no repeat within a batch).
        """
        train, size = self.data.train, self.config.batch_size
        while self.draw_probs is not None:
            index = np.sort(self.rng.choice(len(train), size, replace=False, p=self.draw_probs))
            yield train.take(index), self.upcoming[index]
        while True:
            order = self.rng.permutation(len(train))
            for start in range(0, len(order) - size + 1, size):
                index = np.sort(order[start : start + size])
                yield train.take(index), self.upcoming[index]

    def _budget_left(self, started: float) -> bool:
        config, budget = self.config, self.budget
        if budget["steps"] >= config.max_steps:
            return False
        if config.max_samples is not None and budget["samples"] >= config.max_samples:
            return False
        return config.max_minutes is None or time.perf_counter() - started < 60 * config.max_minutes

    def train(self, out_dir: Path) -> TrainResult:
        """Train until a budget or patience runs out; the best adapter by validation NDCG@10 is in ``out_dir/best``."""
        config, model = self.config, self.recommender.model
        if self.logger:
            self.logger.log_params({"train": asdict(config), "model": asdict(self.recommender.config)})
        started = time.perf_counter()
        history: list[dict[str, float]] = []
        best, stale = self.evaluate_valid(), 0
        history.append({"step": 0, **best})
        self._save(out_dir / BEST_DIR, best)
        if self.logger:
            self.logger.log_metrics(best, step=0)
        loss_fn = self._recpo_loss if config.mode == "recpo" else self._contrastive_loss
        bar = tqdm(total=config.max_steps, disable=not self.progress, desc=f"training ({config.mode})")
        model.train()
        for batch, positives in self._batches():
            if not self._budget_left(started):
                break
            step_started = time.perf_counter()
            loss, stats = loss_fn(batch, positives)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, config.max_grad_norm)
            if not torch.isfinite(grad_norm):  # one bad batch must not turn every adapter weight into NaN
                skipped = self.budget["skipped_steps"] = self.budget["skipped_steps"] + 1
                if self.logger:
                    self.logger.log_metrics({"skipped_steps": skipped}, step=self.budget["steps"])
                if skipped > 10 + self.budget["steps"] // 10:
                    raise FloatingPointError(f"training diverged: {skipped} steps with a non-finite gradient")
                continue
            lr = self.scheduler.get_last_lr()[0]  # the rate this step uses
            self.optimizer.step()
            self.scheduler.step()
            self.budget["steps"] += 1
            self.budget["samples"] += len(batch)
            step = self.budget["steps"]
            stats.update(
                loss=loss.item(),
                grad_norm=float(grad_norm),
                lr=lr,
                step_s=time.perf_counter() - step_started,
            )
            if self.logger:
                self.logger.log_metrics(stats, step=step)
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}")
            if step % config.eval_every == 0:
                best, stale = self._validate(out_dir, history, best, stale)
                if stale >= config.patience:
                    break
        if self.budget["steps"] % config.eval_every:  # the budget ran out between validations
            best, stale = self._validate(out_dir, history, best, stale)
        bar.close()
        self.budget["wall_s"] = round(time.perf_counter() - started, 1)
        return TrainResult(out_dir / BEST_DIR, best["valid_ndcg@10"], dict(self.budget), history)

    def _validate(
        self, out_dir: Path, history: list[dict[str, float]], best: dict[str, float], stale: int
    ) -> tuple[dict[str, float], int]:
        """Validate, log, keep the adapter if it is the best so far; returns (best metrics, evaluations since)."""
        step = self.budget["steps"]
        metrics = self.evaluate_valid()
        history.append({"step": step, **metrics})
        if self.logger:
            self.logger.log_metrics(metrics, step=step)
        if metrics["valid_ndcg@10"] > best["valid_ndcg@10"]:
            self._save(out_dir / BEST_DIR, metrics)
            return metrics, 0
        return best, stale + 1

    def _save(self, directory: Path, metrics: dict[str, float]) -> None:
        self.recommender.save(directory, metrics={**metrics, "budget": dict(self.budget), "train": asdict(self.config)})
