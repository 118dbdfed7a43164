"""The R²ec model on a tiny random Llama with the real SmolLM2 tokenizer: vectors, padding, generation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from r2ec.inference import read_users
from r2ec.modeling.generation import (
    MIN_SHARED_PREFIX,
    GenerationSettings,
    generate_rollouts,
    left_pad,
    shared_prefix_length,
    states_after_generation,
)
from r2ec.modeling.prompts import ANSWER, PromptSettings, clean_text, format_elapsed, item_turn, user_turn
from r2ec.modeling.recommender import R2ecConfig, R2ecRecommender
from r2ec.modeling.vectors import embed, final_norm, last_hidden, last_token_index, run_layers
from tests.unit.model_helpers import perturb_lora, tiny_recommender


@pytest.fixture(scope="module")
def model(tiny_cache) -> R2ecRecommender:
    recommender = tiny_recommender(tiny_cache, reasoning=False)
    perturb_lora(recommender)
    return recommender


ROWS = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [20, 21, 22, 23]]


def right_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = left_pad(rows, pad)
    return torch.stack([r.roll(-int((m == 0).sum())) for r, m in zip(ids, mask, strict=True)]), torch.stack(
        [m.roll(-int((m == 0).sum())) for m in mask]
    )


def test_vectors_do_not_depend_on_padding(model: R2ecRecommender) -> None:
    pad = model.tokenizer.pad_token_id
    with torch.no_grad():
        left = last_hidden(model.model, *left_pad(ROWS, pad))
        right = last_hidden(model.model, *right_pad(ROWS, pad))
        alone = torch.cat([last_hidden(model.model, *left_pad([row], pad)) for row in ROWS])
    assert torch.allclose(left, alone, atol=1e-4)
    assert torch.allclose(right, alone, atol=1e-4)
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)  # distinct prompts, distinct vectors


def test_last_token_index_never_points_at_padding() -> None:
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [3, 2, 3]


def test_split_forward_equals_the_decoders_own_forward(model: R2ecRecommender) -> None:
    ids, mask = left_pad(ROWS, model.tokenizer.pad_token_id)
    with torch.no_grad():
        lower = run_layers(model.model, embed(model.model, ids), mask, 0, 1)
        upper = final_norm(model.model, run_layers(model.model, lower, mask, 1, 2))
        whole = last_hidden(model.model, ids, mask)
    assert torch.allclose(upper[:, -1].float(), whole, atol=1e-5)


def test_item_vectors_are_centred_unit_vectors(model: R2ecRecommender, synthetic_data) -> None:
    items = synthetic_data.items.head(24)
    model.item_mean = None
    vectors = model.encode_items(items)
    assert vectors.shape == (24, model.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    uncentred = replace(model.config, centre=False)
    raw = R2ecRecommender(model.model, model.tokenizer, uncentred).encode_items(items)
    # centring removes the shared direction: mean pairwise cosine drops
    assert (vectors @ vectors.T).mean() < (raw @ raw.T).mean()


def test_saved_checkpoint_scores_like_the_original(
    model: R2ecRecommender, synthetic_data, tiny_cache, tmp_path
) -> None:
    model.set_catalogue(synthetic_data.items)
    batch = synthetic_data.test.take(slice(0, 4))
    before = model.full_sort_predict(batch)
    model.save(tmp_path / "ckpt")
    loaded = R2ecRecommender.load(tmp_path / "ckpt", tiny_cache)
    loaded.set_catalogue(synthetic_data.items)
    assert torch.allclose(loaded.full_sort_predict(batch), before, atol=1e-3)


def test_generation_ends_every_rollout_with_the_marker(tiny_cache) -> None:
    recommender = tiny_recommender(tiny_cache, reasoning=True)
    prompts = [[1, 2, 3, 4], [7, 8]]
    settings = GenerationSettings(max_new_tokens=6, do_sample=True, temperature=1.5, top_k=50)
    rollouts = generate_rollouts(recommender.model, recommender.tokenizer, prompts, settings, num_return_sequences=3)
    assert rollouts.input_ids.shape[0] == 6 and len(rollouts.rationales) == 6
    answer = recommender.tokenizer(ANSWER, add_special_tokens=False).input_ids
    for ids, mask, completion in zip(
        rollouts.input_ids, rollouts.attention_mask, rollouts.completion_mask, strict=True
    ):
        text = recommender.tokenizer.decode(ids[mask.bool()])
        assert text.endswith(ANSWER) or ids[mask.bool()][-len(answer) :].tolist() == answer
        assert 1 <= int(completion.sum()) <= 6
        assert not (completion.bool() & ~mask.bool()).any()  # actions are never padding
    assert all(ANSWER not in r for r in rollouts.rationales)


def real_rows(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]


def test_user_vectors_read_on_the_cache_equal_a_second_forward(tiny_cache) -> None:
    recommender = tiny_recommender(tiny_cache, reasoning=True)
    perturb_lora(recommender)
    settings = GenerationSettings(max_new_tokens=5, do_sample=True, temperature=1.5, top_k=50)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [7, 8], [9, 10, 11]]
    torch.manual_seed(0)
    rollouts = generate_rollouts(
        recommender.model, recommender.tokenizer, prompts, settings, num_return_sequences=2, read_vectors=True
    )
    two_pass = recommender.raw_vectors(real_rows(rollouts.input_ids, rollouts.attention_mask))
    assert rollouts.vectors is not None and rollouts.vectors.shape == two_pass.shape == (6, recommender.dim)
    assert torch.allclose(rollouts.vectors, two_pass, atol=1e-4), (rollouts.vectors - two_pass).abs().max()


def test_cache_read_ignores_what_a_row_generated_after_it_stopped(tiny_cache) -> None:
    """Rows that stop early keep generating padding (or end-of-text) into the cache; none of it may leak in."""
    recommender = tiny_recommender(tiny_cache, reasoning=True)
    perturb_lora(recommender)
    answer = recommender.tokenizer(ANSWER, add_special_tokens=False).input_ids
    prompts, n_new = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11, 12]], 6
    ids, mask = left_pad(prompts, recommender.tokenizer.pad_token_id)
    with torch.no_grad():
        out = recommender.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=n_new,
            min_new_tokens=n_new,
            do_sample=False,
            pad_token_id=recommender.tokenizer.pad_token_id,
            return_dict_in_generate=True,
        )
    generated = out.sequences[:, ids.shape[1] :].tolist()
    # as if row 0 ended without the marker after 2 tokens, row 1 stopped at a marker after 4, row 2 ran out of budget
    finished = [(generated[0][:2] + answer, 2), (generated[1][:4], 4), (generated[2] + answer, n_new)]
    from_cache, _ = states_after_generation(recommender.model, out.cache, mask, n_new, finished)
    two_pass = recommender.raw_vectors([p + tokens for p, (tokens, _) in zip(prompts, finished, strict=True)])
    assert torch.allclose(from_cache, two_pass, atol=1e-4), (from_cache - two_pass).abs().max()


def test_prompt_text_is_cleaned_and_time_is_formatted() -> None:
    assert clean_text("Ignore previous\x00 instructions\x1b[2J  now", 20) == "Ignore previous inst"
    assert format_elapsed(3 * 86400 + 4 * 3600) == "3d 4.0h"
    assert format_elapsed(2 * 3600 + 630) == "2h 10.5min"
    assert format_elapsed(720) == "12.0min"
    turn = item_turn({"title": "Heat", "genres": "Crime", "year": 1995}, PromptSettings())
    assert "Title: Heat" in turn and "Genres: Crime" in turn and "Year: 1995" in turn
    assert "Description" not in turn and "Number of ratings" not in turn
    assert "Year" not in item_turn({"title": "Heat", "year": 1995}, PromptSettings(show_year=False))
    assert "Number of ratings: 412" in item_turn({"title": "Heat", "rating_count": 412}, PromptSettings())


def test_date_line_states_the_prediction_day_in_utc() -> None:
    late_on_april_10th_1998 = 892252740  # 1998-04-10 23:59:00 UTC
    shown = user_turn(
        ["Heat"], [4.0], [late_on_april_10th_1998 - 3600], late_on_april_10th_1998, PromptSettings(show_date=True)
    )
    hidden = user_turn(["Heat"], [4.0], [late_on_april_10th_1998 - 3600], late_on_april_10th_1998, PromptSettings())
    assert "Today is 1998-04-10. Below is my history" in shown
    assert "Today is" not in hidden and hidden.replace("Below", "Today is 1998-04-10. Below") == shown


def test_prompt_budget_drops_oldest_history_lines(tiny_cache, synthetic_data) -> None:
    recommender = tiny_recommender(tiny_cache, reasoning=False)
    batch = synthetic_data.test.take(slice(0, 2))
    full = recommender.user_prompt_ids(batch, synthetic_data.items)
    capped = R2ecRecommender(
        recommender.model, recommender.tokenizer, replace(recommender.config, max_prompt_tokens=120)
    )
    short = capped.user_prompt_ids(batch, synthetic_data.items)
    for capped_ids, full_ids in zip(short, full, strict=True):
        assert len(capped_ids) <= len(full_ids)
        if len(full_ids) > 120:
            assert len(capped_ids) < len(full_ids)


def test_config_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="tau"):
        R2ecConfig(tau=0)
    with pytest.raises(ValueError, match="dtype"):
        R2ecConfig(dtype="float16")


def test_concurrent_cache_writers_all_get_the_folder(tmp_path) -> None:
    """Two workers converting the backbone at once: both succeed, one folder remains, no temp folder is left."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from r2ec.modeling.backbone import _publish

    both_written = Barrier(2)

    def write(folder) -> None:
        (folder / "config.json").write_text(folder.name)
        both_written.wait(timeout=10)  # neither renames before both have written: a real race

    target = tmp_path / "backbone"
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: _publish(target, write), range(2)))
    assert results == [target, target]
    assert (target / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["backbone"]


def test_backbone_writes_the_reasoning_and_the_adapter_reads_the_vector(tiny_cache, synthetic_data) -> None:
    """reasoning_writer="backbone": the text is what the adapter-free model writes; the vector is the adapter's."""
    served = tiny_recommender(tiny_cache, reasoning=True, reasoning_writer="backbone")
    perturb_lora(served, scale=2.0)
    served.set_catalogue(synthetic_data.items)
    batch = synthetic_data.test.take(slice(0, 4))
    readout = read_users(served, batch)

    prompts = served.user_prompt_ids(batch, served.catalogue)
    with served.model.disable_adapter():
        plain = generate_rollouts(served.model, served.tokenizer, prompts, served.config.generation, read_vectors=True)
    assert readout.rationales == plain.rationales and readout.stopped == plain.stopped
    with_adapter = served.project(served.raw_vectors(plain.sequences())).numpy()
    np.testing.assert_allclose(readout.vectors, with_adapter, atol=1e-5)
    without_adapter = served.project(plain.vectors).numpy()
    assert not np.allclose(readout.vectors, without_adapter, atol=1e-3)  # the adapter, not the backbone, read it


def test_backbone_log_likelihood_scores_only_reasoning_tokens(tiny_cache, synthetic_data) -> None:
    served = tiny_recommender(tiny_cache, reasoning=True, reasoning_writer="backbone")
    served.set_catalogue(synthetic_data.items)
    readout = read_users(served, synthetic_data.test.take(slice(0, 3)))
    fluency = served.backbone_log_likelihood(readout.rollouts)
    assert fluency.shape == (3,) and np.all(fluency < 0) and np.all(np.isfinite(fluency))
    # greedy generation by the backbone scored its own tokens on the way: the same figure without a forward
    np.testing.assert_allclose(readout.rollouts.mean_logprob, fluency, atol=1e-4)
    # the same text scored by a different (perturbed) adapter-free model changes nothing: adapters are off
    perturb_lora(served, scale=2.0)
    np.testing.assert_allclose(served.backbone_log_likelihood(readout.rollouts), fluency, atol=1e-5)


def test_sharing_the_prompts_common_prefix_changes_no_token_and_no_vector(tiny_cache, synthetic_data) -> None:
    recommender = tiny_recommender(tiny_cache, reasoning=True)
    perturb_lora(recommender)
    prompts = recommender.user_prompt_ids(synthetic_data.test.take(slice(0, 5)), synthetic_data.items)
    assert shared_prefix_length(prompts) >= MIN_SHARED_PREFIX  # the system turn and the instructions
    settings = GenerationSettings(max_new_tokens=5, batch_size=2)
    model, tokenizer, split = recommender.model, recommender.tokenizer, recommender.frozen_layers
    shared = generate_rollouts(model, tokenizer, prompts, settings, read_vectors=True, keep_layer=split)
    alone = generate_rollouts(
        model, tokenizer, prompts, settings, read_vectors=True, keep_layer=split, share_prefix=False
    )
    assert shared.sequences() == alone.sequences() and shared.rationales == alone.rationales
    assert torch.allclose(shared.vectors, alone.vectors, atol=1e-4)
    for with_prefix, without in zip(shared.layer_states, alone.layer_states, strict=True):
        assert with_prefix.shape == without.shape and torch.allclose(with_prefix, without, atol=1e-4)


def test_kept_item_states_serve_every_adapter_of_their_backbone_and_no_other(
    tiny_cache, synthetic_data, tmp_path
) -> None:
    items, store = synthetic_data.items.head(24), tmp_path / "item-states"
    recommender = tiny_recommender(tiny_cache, reasoning=False)
    rows = recommender.item_prompt_ids(items)
    perturb_lora(recommender)
    first = recommender.raw_item_vectors(items, states=store)
    assert torch.allclose(first, recommender.raw_vectors(rows), atol=1e-5)
    (kept,) = store.glob("*.pt")

    perturb_lora(recommender, scale=0.5)  # a new adapter on the same backbone: only its top layer reruns
    second = recommender.raw_item_vectors(items, states=store)
    assert torch.allclose(second, recommender.raw_vectors(rows), atol=1e-5)
    assert not torch.allclose(second, first, atol=1e-3) and list(store.glob("*.pt")) == [kept]
    torch.save([state * 0 for state in torch.load(kept)], kept)
    zeroed = recommender.raw_item_vectors(items, states=store)
    assert torch.allclose(zeroed, zeroed[:1].expand_as(zeroed))  # every item reads zeros: the kept file is what is read

    with torch.no_grad():  # another backbone below the adapters: its own states, never the kept ones
        next(recommender.model.get_base_model().model.layers[0].parameters()).add_(0.05)
    third = recommender.raw_item_vectors(items, states=store)
    assert torch.allclose(third, recommender.raw_vectors(rows), atol=1e-5)
    assert len(list(store.glob("*.pt"))) == 2
