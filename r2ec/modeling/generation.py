"""Batched reasoning generation that stops at ``<answer>`` (method.md §1, §6).

Prompts are sorted by length so batches waste little padding; each row keeps the generated token ids as
they are (the same sequence is read in training and inference). A row that ran out of budget or ended
without the marker gets ``<answer>`` appended; those appended tokens are not the policy's actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from r2ec.modeling.prompts import ANSWER, clean_text


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding of the reasoning head."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.5
    top_k: int = 50
    batch_size: int = 16
    max_rationale_chars: int = 1000


@dataclass(frozen=True)
class Rollouts:
    """Prompt + reasoning + ``<answer>`` for N rows, left-padded.

    Shapes: ``input_ids``, ``attention_mask``, ``completion_mask`` are (N, T); ``completion_mask`` is 1 on the
    generated tokens only. ``rationales`` are the reasoning texts without the marker, cleaned and capped.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    rationales: list[str]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T) ids and mask of token lists padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def _finish(generated: list[int], tokenizer: PreTrainedTokenizerBase, answer_ids: list[int]) -> tuple[list[int], int]:
    """Cut one generated row at its end, append the marker if missing; returns (tokens, n_generated)."""
    stop_ids = {tokenizer.pad_token_id, tokenizer.eos_token_id}
    end = next((i for i, t in enumerate(generated) if t in stop_ids), len(generated))
    kept = generated[:end]
    if ANSWER in tokenizer.decode(kept):
        return kept, len(kept)
    return kept + answer_ids, len(kept)


@torch.no_grad()
def generate_rollouts(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    settings: GenerationSettings,
    num_return_sequences: int = 1,
) -> Rollouts:
    """Reason for every prompt (``num_return_sequences`` rollouts each, consecutive rows per prompt)."""
    answer_ids = tokenizer(ANSWER, add_special_tokens=False).input_ids
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    finished: dict[int, list[tuple[list[int], int]]] = {}
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    for start in range(0, len(order), settings.batch_size):
        chunk = order[start : start + settings.batch_size]
        ids, mask = left_pad([prompts[i] for i in chunk], tokenizer.pad_token_id)
        sampling = {"temperature": settings.temperature, "top_k": settings.top_k} if settings.do_sample else {}
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=settings.max_new_tokens,
            do_sample=settings.do_sample,
            num_return_sequences=num_return_sequences,
            stop_strings=[ANSWER],
            tokenizer=tokenizer,
            pad_token_id=tokenizer.pad_token_id,
            use_cache=True,
            **sampling,
        )
        generated = out[:, ids.shape[1] :].tolist()
        for j, prompt_index in enumerate(chunk):
            rows = generated[j * num_return_sequences : (j + 1) * num_return_sequences]
            finished[prompt_index] = [_finish(row, tokenizer, answer_ids) for row in rows]
    model.train(was_training)

    sequences, completion_spans, rationales = [], [], []
    for i in range(len(prompts)):
        for tokens, n_generated in finished[i]:
            sequences.append([*prompts[i], *tokens])
            completion_spans.append((len(tokens), n_generated))
            text = tokenizer.decode(tokens[:n_generated], skip_special_tokens=True).split(ANSWER)[0]
            rationales.append(clean_text(text, settings.max_rationale_chars))
    input_ids, attention_mask = left_pad(sequences, tokenizer.pad_token_id)
    completion_mask = torch.zeros_like(attention_mask)
    width = input_ids.shape[1]
    for row, (n_tokens, n_generated) in enumerate(completion_spans):
        completion_mask[row, width - n_tokens : width - n_tokens + n_generated] = 1
    return Rollouts(input_ids, attention_mask, completion_mask, rationales)
