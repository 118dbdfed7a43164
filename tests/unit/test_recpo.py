"""RecPO's rewards, advantages and losses on hand-made numbers, and the trainer on a tiny model."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from r2ec.data.samples import PAD
from r2ec.modeling.backbone import LoraSettings
from r2ec.modeling.recommender import FrozenLayerCache
from r2ec.modeling.vectors import last_hidden_from_layer
from r2ec.training.config import TrainConfig
from r2ec.training.logging import JsonlLogger
from r2ec.training.losses import item_softmax_loss, policy_token_loss, sampling_log_q
from r2ec.training.rewards import fused_reward, group_advantages, rank_reward, similarity_reward
from r2ec.training.trainer import (
    R2ecTrainer,
    draw_weights,
    negative_distribution,
    new_releases,
    recency_weights,
)
from tests.unit.model_helpers import LEARNING_MODEL, perturb_lora, tiny_recommender


def test_rank_reward_is_ndcg_with_a_cutoff() -> None:
    ranks = torch.tensor([1, 3, 1000, 1001, 0])
    expected = [1.0, 0.5, 1 / math.log2(1001), 0.0, 0.0]
    assert torch.allclose(rank_reward(ranks, cutoff=1000), torch.tensor(expected))


def test_similarity_reward_is_the_softmax_mass_of_the_target() -> None:
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.0, -torch.inf, 0.0]])
    target = torch.tensor([0, 2])
    expected = [math.exp(2) / (math.exp(2) + math.exp(1) + 1), 0.5]
    assert torch.allclose(similarity_reward(scores, target), torch.tensor(expected), atol=1e-6)


def test_fused_reward_weights_the_two_terms() -> None:
    fused = fused_reward(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), beta=0.05)
    assert torch.allclose(fused, torch.tensor([0.95, 0.05]))


def test_group_advantages_are_normalised_within_each_group() -> None:
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0])
    advantages = group_advantages(rewards, group_size=4)
    first = (rewards[:4] - 2.5) / rewards[:4].std(unbiased=False)
    assert torch.allclose(advantages[:4], first, atol=1e-6)
    assert torch.all(advantages[4:] == 0)  # a group whose rollouts tie learns nothing from them
    with pytest.raises(ValueError):
        group_advantages(rewards[:6], group_size=4)


def test_token_loss_pushes_each_rollout_by_its_own_advantage() -> None:
    """The reference code's broadcast makes a group's token gradient cancel; ours must not (method.md §3)."""
    completion = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 0], [0, 1, 1, 1]])
    advantages = group_advantages(torch.tensor([0.9, 0.1, 0.5, 0.2]), group_size=4)
    logprobs = torch.randn(completion.shape, requires_grad=True)
    loss, per_token = policy_token_loss(logprobs, logprobs.detach(), advantages, completion)
    assert per_token.shape == completion.shape
    loss.backward()
    ascent = -logprobs.grad  # the direction the update moves each token's log-probability
    on = completion.bool()
    assert torch.all(ascent[~on] == 0)
    for row in range(4):
        assert torch.all(ascent[row][on[row]] != 0)
        assert torch.all(torch.sign(ascent[row][on[row]]) == torch.sign(advantages[row]))


def test_item_loss_is_weighted_and_respects_the_history_mask() -> None:
    users = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    candidates = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 1])
    loss = item_softmax_loss(users, candidates, labels, torch.ones(2), tau=1.0)
    expected = -torch.log_softmax(users @ candidates.T, dim=1)[[0, 1], [0, 1]].mean()
    assert torch.allclose(loss, expected)
    masked = torch.tensor([[False, False, True], [False, False, True]])
    assert item_softmax_loss(users, candidates, labels, torch.ones(2), 1.0, masked) < loss
    assert item_softmax_loss(users, candidates, labels, torch.zeros(2), 1.0) == 0


def _learned_item_scores(correct: bool, steps: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Item scores learnt by the sampled item loss when users carry no signal: only popularity can be learnt.

    Targets and negatives are drawn by popularity, as in the trainer. Returns (scores, popularity).
    """
    rng = np.random.default_rng(0)
    n_items, batch, n_neg = 200, 16, 32
    popularity = 1.0 / np.arange(1, n_items + 1)  # Zipf
    popularity /= popularity.sum()
    log_q = sampling_log_q(popularity, popularity, batch, n_neg)
    items = torch.zeros(n_items, 2, requires_grad=True)  # score of item c = its first coordinate
    optimizer = torch.optim.Adam([items], lr=0.05)
    user = torch.tensor([[1.0, 0.0]]).expand(batch, 2)
    for _ in range(steps):
        targets = rng.choice(n_items, batch, p=popularity)
        ids = np.unique(np.concatenate([targets, rng.choice(n_items, n_neg, p=popularity)]))
        labels = torch.from_numpy(np.searchsorted(ids, targets))
        index = torch.from_numpy(ids)
        loss = item_softmax_loss(
            user, items[index], labels, torch.ones(batch), 1.0, None, log_q[index] if correct else None
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return items[:, 0].detach().numpy(), popularity


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def test_sampling_correction_lets_the_item_loss_learn_popularity() -> None:
    """Popularity-drawn candidates teach an uncorrected sampled softmax to forget popularity; logQ restores it."""
    corrected, popularity = _learned_item_scores(correct=True)
    uncorrected, _ = _learned_item_scores(correct=False)
    assert _spearman(corrected, popularity) > 0.6
    assert _spearman(corrected, popularity) > _spearman(uncorrected, popularity) + 0.3
    top = np.argsort(-popularity)[:10]
    assert np.isin(np.argsort(-corrected)[:10], top).sum() >= 7


@pytest.fixture
def recpo_trainer(tiny_cache, synthetic_data) -> R2ecTrainer:
    recommender = tiny_recommender(tiny_cache, reasoning=True)
    config = TrainConfig(mode="recpo", batch_size=4, group_size=4, max_new_tokens=6, eval_samples=8, n_negatives=16)
    trainer = R2ecTrainer(recommender, synthetic_data, config)
    trainer.refresh_item_table()
    return trainer


def test_item_loss_reaches_the_item_tower(recpo_trainer: R2ecTrainer, synthetic_data) -> None:
    batch = synthetic_data.train.take(slice(0, 4))
    candidates = recpo_trainer._candidates(batch, batch.target[:, None])
    device = candidates.vectors.device
    users = recpo_trainer.recommender.item_table[torch.from_numpy(batch.history[:, 0])].to(device)
    weights = torch.ones(4, device=device)
    item_softmax_loss(users, candidates.vectors, candidates.labels, weights, 0.02, candidates.history_mask).backward()
    lora_grads = [p.grad for n, p in recpo_trainer.recommender.model.named_parameters() if "lora_B" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in lora_grads)


@pytest.mark.parametrize(
    ("item_gradients", "negative_gradients", "targets_move", "negatives_move"),
    [(True, True, True, True), (True, False, True, False), (False, True, False, False)],
)
def test_candidates_carry_gradient_only_when_asked(
    recpo_trainer: R2ecTrainer, synthetic_data, item_gradients, negative_gradients, targets_move, negatives_move
) -> None:
    recpo_trainer.config = replace(
        recpo_trainer.config, item_gradients=item_gradients, negative_gradients=negative_gradients
    )
    batch = synthetic_data.train.take(slice(0, 4))
    candidates = recpo_trainer._candidates(batch, batch.target[:, None])
    n_targets = len(np.unique(batch.target))
    for part, moves in ((slice(0, n_targets), targets_move), (slice(n_targets, None), negatives_move)):
        recpo_trainer.recommender.model.zero_grad()
        vectors = candidates.vectors[part]
        if vectors.requires_grad:
            vectors.sum().backward(retain_graph=True)  # a loss of these candidates alone
        lora_grads = [p.grad for n, p in recpo_trainer.recommender.model.named_parameters() if "lora_B" in n]
        assert any(g is not None and g.abs().sum() > 0 for g in lora_grads) == moves


def test_upcoming_targets_are_positives_of_their_own_softmax(tiny_cache, synthetic_data) -> None:
    """Each (user, upcoming target) pair is one softmax row: its own positive competes, the user's other positives
    and history do not; batch rows without a later target give fewer pairs."""
    recommender = tiny_recommender(tiny_cache, reasoning=False)
    config = TrainConfig(batch_size=4, upcoming_targets=3, n_negatives=16, eval_samples=8)
    trainer = R2ecTrainer(recommender, synthetic_data, config)
    positives = np.array([[3, 5, 7], [5, 9, PAD], [11, PAD, PAD], [13, 15, 17]])
    batch = synthetic_data.train.take(np.arange(4))
    candidates = trainer._candidates(batch, positives)
    items = candidates.items
    pairs = [(int(r), int(items[c])) for r, c in zip(candidates.users.cpu(), candidates.labels.cpu(), strict=True)]
    assert pairs == [(row, int(item)) for row in range(4) for item in positives[row] if item != PAD]
    for pair, (row, item) in enumerate(pairs):
        masked = set(items[candidates.history_mask[pair].cpu().numpy()].tolist())
        assert item not in masked
        assert {int(i) for i in positives[row] if i not in (PAD, item)} <= masked
    loss, _ = trainer._contrastive_loss(batch, positives)
    assert torch.isfinite(loss)


def test_the_contrastive_loss_can_overfit_one_batch(tiny_cache, synthetic_data) -> None:
    """Same users, same negatives every step: the loss must go far below chance (it sat at chance when only the
    targets carried gradient and the centre was held between refreshes)."""
    recommender = tiny_recommender(tiny_cache, reasoning=False, **LEARNING_MODEL)
    trainer = R2ecTrainer(recommender, synthetic_data, TrainConfig(batch_size=16, learning_rate=1e-3, eval_samples=8))
    batch = synthetic_data.train.take(np.arange(16))
    negatives_state = trainer.rng.bit_generator.state
    for _ in range(50):
        trainer.rng.bit_generator.state = negatives_state
        loss, stats = trainer._contrastive_loss(batch, batch.target[:, None])
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
    assert stats["item_loss"] < 0.2 * stats["chance_loss"]


def test_recpo_steps_log_losses_and_move_every_adapter(recpo_trainer: R2ecTrainer, tmp_path: Path) -> None:
    model = recpo_trainer.recommender.model
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    recpo_trainer.logger = JsonlLogger(tmp_path / "metrics.jsonl")
    recpo_trainer.config = replace(recpo_trainer.config, max_steps=3, eval_every=3)
    result = recpo_trainer.train(tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "token_loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["reasoning_tokens_per_rollout"] >= 1 for r in steps)
    assert result.budget["rollouts"] == 3 * 4 * 4
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert sorted(moved) == sorted(before)
    assert (result.best_dir / "r2ec.json").exists()


def test_the_learning_rate_warms_up_linearly(tiny_cache, synthetic_data, tmp_path: Path) -> None:
    config = TrainConfig(mode="contrastive", batch_size=4, n_negatives=8, eval_samples=8, max_steps=4, eval_every=4)
    recommender = tiny_recommender(tiny_cache, reasoning=False)
    trainer = R2ecTrainer(recommender, synthetic_data, replace(config, warmup_steps=2))
    trainer.logger = JsonlLogger(tmp_path / "metrics.jsonl")
    trainer.train(tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] / config.learning_rate for r in records if "lr" in r] == pytest.approx([0.0, 0.5, 1.0, 1.0])


def test_recency_weights_halve_every_half_life() -> None:
    day = 86400
    times = np.array([0, 10 * day, 20 * day, 30 * day])
    weights = recency_weights(times, half_life_days=10)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[1:] / weights[:-1] == pytest.approx([2.0, 2.0, 2.0])
    assert recency_weights(times, None) is None


def test_recency_weighted_batches_favour_recent_samples(tiny_cache, synthetic_data) -> None:
    """Batches drawn with a short half-life hold markedly later samples than shuffled epochs."""
    recommender = tiny_recommender(tiny_cache, reasoning=False)
    config = TrainConfig(mode="contrastive", batch_size=8, n_negatives=8, eval_samples=8)
    times = synthetic_data.train.target_time
    half_life = (times.max() - times.min()) / 86400 / 8

    def batch_times(trainer: R2ecTrainer) -> list[np.ndarray]:
        batches = trainer._batches()
        return [next(batches)[0].target_time for _ in range(20)]

    uniform = batch_times(R2ecTrainer(recommender, synthetic_data, config))
    recent = batch_times(R2ecTrainer(recommender, synthetic_data, replace(config, recency_half_life_days=half_life)))
    assert np.mean(recent) > np.mean(uniform) + 0.25 * (times.max() - times.min())


def test_a_new_release_came_out_in_the_sample_year_or_later() -> None:
    last_second_of_1997, first_second_of_1998 = 883_612_799, 883_612_800
    times = np.array([last_second_of_1997, first_second_of_1998, first_second_of_1998, first_second_of_1998])
    years = np.array([1997.0, 1997.0, 1999.0, np.nan])
    assert new_releases(times, years).tolist() == [True, False, True, False]


def test_new_release_weight_multiplies_the_draws_of_new_releases(synthetic_data) -> None:
    train = synthetic_data.train
    item_year = np.where(np.arange(synthetic_data.n_items) % 2 == 0, 3000.0, 1900.0)  # even items: always new
    new = train.target % 2 == 0
    probs = draw_weights(train, item_year, TrainConfig(new_release_weight=4.0))
    assert probs.sum() == pytest.approx(1.0)
    assert np.unique(probs[new]) == pytest.approx(4.0 * np.unique(probs[~new]))
    recent = draw_weights(train, item_year, TrainConfig(new_release_weight=4.0, recency_half_life_days=10))
    recency = recency_weights(train.target_time, 10)
    assert recent / recency == pytest.approx(np.where(new, 4.0, 1.0) * recent[~new][0] / recency[~new][0])
    assert draw_weights(train, item_year, TrainConfig()) is None


def test_new_release_weight_without_release_years_is_refused_before_training(tiny_cache, synthetic_data) -> None:
    assert "year" not in synthetic_data.items.columns
    recommender = tiny_recommender(tiny_cache, reasoning=False)
    config = TrainConfig(mode="contrastive", batch_size=8, n_negatives=8, eval_samples=8, new_release_weight=3.0)
    with pytest.raises(ValueError, match="release years"):
        R2ecTrainer(recommender, synthetic_data, config)


def test_a_run_is_validated_when_its_budget_ends_between_validations(
    recpo_trainer: R2ecTrainer, tmp_path: Path
) -> None:
    recpo_trainer.config = replace(recpo_trainer.config, max_steps=5, eval_every=3)
    result = recpo_trainer.train(tmp_path / "run")
    assert [h["step"] for h in result.history] == [0, 3, 5]


@pytest.mark.parametrize("top_layers", [None, 1])
def test_the_item_cache_reruns_every_layer_that_has_adapters(tiny_cache, synthetic_data, top_layers) -> None:
    recommender = tiny_recommender(
        tiny_cache, reasoning=False, lora=LoraSettings(rank=8, alpha=16, top_layers=top_layers)
    )
    cache = FrozenLayerCache(recommender, recommender.item_prompt_ids(synthetic_data.items.head(4)))
    with torch.no_grad():
        before = cache.last_hidden([0, 1, 2, 3])
        perturb_lora(recommender)
        after = cache.last_hidden([0, 1, 2, 3])
    assert not torch.allclose(before, after, atol=1e-4)  # the cached (frozen) part never hides an adapter


def test_train_config_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="group_size"):
        TrainConfig(mode="recpo", group_size=1)
    with pytest.raises(ValueError, match="mode"):
        TrainConfig(mode="dpo")
    with pytest.raises(ValueError, match="item_loss_top"):
        TrainConfig(item_loss_top=5, group_size=4)
    with pytest.raises(ValueError, match="upcoming_targets"):
        TrainConfig(mode="recpo", upcoming_targets=2)


def test_negatives_can_be_kept_to_items_someone_chose_in_training() -> None:
    counts = np.array([0.0, 3.0, 0.0, 9.0])
    everything = negative_distribution(counts, by_popularity=True, train_targets_only=False)
    chosen_only = negative_distribution(counts, by_popularity=True, train_targets_only=True)
    assert (everything > 0).all() and everything[3] > everything[1] > everything[0]
    assert (chosen_only[[0, 2]] == 0).all() and chosen_only[3] > chosen_only[1] > 0
    uniform = negative_distribution(counts, by_popularity=False, train_targets_only=True)
    assert uniform[1] == uniform[3] > 0 and uniform[0] == 0
    for probs in (everything, chosen_only, uniform):
        assert math.isclose(probs.sum(), 1.0)


def test_served_reasoning_trains_the_vector_where_the_service_reads_it(tiny_cache, synthetic_data) -> None:
    """Same tokens (prompt + the backbone's reasoning + <answer>), same position, same vector as serving."""
    recommender = tiny_recommender(tiny_cache, reasoning=True, reasoning_writer="backbone")
    perturb_lora(recommender)
    config = TrainConfig(mode="contrastive", served_reasoning=True, batch_size=4, max_steps=2, eval_samples=6,
                         n_negatives=8, eval_every=1)  # fmt: skip
    trainer = R2ecTrainer(recommender, synthetic_data, config)
    batch = synthetic_data.train.take(np.arange(4))
    prompts = recommender.user_prompt_ids(batch, synthetic_data.items)
    served = recommender.user_rollouts(batch, synthetic_data.items)
    context = trainer._served_context(prompts)
    assert [len(states) for states in context] == [len(tokens) for tokens in served.sequences()]
    with torch.no_grad():
        trained = last_hidden_from_layer(recommender.model, context, recommender.frozen_layers)
    assert torch.allclose(trained, served.vectors, atol=1e-5)
    assert not torch.allclose(trained, recommender.raw_vectors(prompts), atol=1e-3)  # not the prompt-only vector
    validation = trainer.valid_cache.all_last_hidden()
    assert torch.allclose(validation, recommender.user_rollouts(trainer.valid, synthetic_data.items).vectors, atol=1e-5)

    trainer._served_context(prompts)  # seen prompts are not generated again
    assert trainer.budget["reasoning_tokens"] == int(served.completion_mask.sum())


def test_served_reasoning_needs_the_backbone_writer_and_contrastive_mode(tiny_cache, synthetic_data) -> None:
    with pytest.raises(ValueError, match="contrastive-mode option"):
        TrainConfig(mode="recpo", served_reasoning=True)
    adapter_writes = tiny_recommender(tiny_cache, reasoning=True)
    with pytest.raises(ValueError, match="reasoning_writer='backbone'"):
        R2ecTrainer(adapter_writes, synthetic_data, TrainConfig(mode="contrastive", served_reasoning=True))
