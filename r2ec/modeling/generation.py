"""Batched reasoning generation that stops at ``<answer>`` (method.md §1, §6).

Prompts are sorted by length so batches waste little padding; each row keeps the generated token ids as
they are (the same sequence is read in training and inference). A row that ran out of budget or ended
without the marker gets ``<answer>`` appended; those appended tokens are not the policy's actions.

The user vector is the hidden state after a row's last token, which generation never feeds to the model. Rather
than a second forward over prompt + reasoning (all an engine that returns only text allows), one short step on
the generation's KV cache reads it (``read_vectors``): method.md §6.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import Cache, PreTrainedTokenizerBase

from r2ec.modeling.prompts import ANSWER, clean_text
from r2ec.modeling.vectors import decoder_and_head


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
    stopped: list[bool]  # the row wrote ``<answer>`` itself before the token cap (else the marker was appended)
    vectors: torch.Tensor | None = None  # (N, d) float32 raw user vectors, when generation was asked to read them
    layer_states: list[torch.Tensor] | None = None  # per row (T_row, d): input of layer ``keep_layer``, real tokens
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase ("generation", "vectors")
    mean_logprob: list[float] | None = None  # per row: mean log-probability of its reasoning tokens, as generated

    def sequences(self) -> list[list[int]]:
        """Each row's real tokens (prompt + reasoning + ``<answer>``), padding removed."""
        return [row[mask.bool()].tolist() for row, mask in zip(self.input_ids, self.attention_mask, strict=True)]


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
    """Cut one generated row at its end, append the marker if missing; returns (tokens, n_generated).

    The row stopped by itself exactly when ``len(tokens) == n_generated``.
    """
    stop_ids = {tokenizer.pad_token_id, tokenizer.eos_token_id}
    end = next((i for i, t in enumerate(generated) if t in stop_ids), len(generated))
    kept = generated[:end]
    if ANSWER in tokenizer.decode(kept):
        return kept, len(kept)
    return kept + answer_ids, len(kept)


@torch.no_grad()
def states_after_generation(
    model: nn.Module,
    cache: Cache,
    prompt_mask: torch.Tensor,
    n_generated: int,
    finished: list[tuple[list[int], int]],
    keep_layer: int | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """(N, d) float32 final-norm hidden state after each finished row's last token, read on the generation's cache.

    With ``keep_layer``, also each row's states entering that layer at the fed tail positions (``tails`` below).

    Args:
        cache: what ``generate`` left: the left-padded prompts (``prompt_mask``, (N, P)) and the first
            ``n_generated - 1`` generated positions (the last generated token is never fed).
        finished: per row, the kept tokens (with the marker appended where it was missing) and how many of them
            were generated: ``_finish``'s output.
    A row's cached positions are used up to just before its last generated token; that token and any appended
    marker are fed again in one step, so positions a row generated after it stopped (padding, or an end-of-text
    token its sequence does not keep) are masked out, whatever they hold.
    """
    n_rows, prompt_width = prompt_mask.shape
    if cache.get_seq_length() != prompt_width + n_generated - 1:
        raise ValueError(f"cache holds {cache.get_seq_length()} positions, expected {prompt_width + n_generated - 1}")
    reused = [max(n - 1, 0) for _, n in finished]
    tails = [tokens[k:] for (tokens, _), k in zip(finished, reused, strict=True)]
    width = max(len(t) for t in tails)
    tail_ids = torch.zeros((n_rows, width), dtype=torch.long)
    tail_mask = torch.zeros((n_rows, width), dtype=torch.long)
    generated_mask = torch.zeros((n_rows, n_generated - 1), dtype=torch.long)
    for row, (tail, k) in enumerate(zip(tails, reused, strict=True)):
        tail_ids[row, : len(tail)] = torch.tensor(tail)
        tail_mask[row, : len(tail)] = 1
        generated_mask[row, :k] = 1
    device = prompt_mask.device
    start = prompt_mask.sum(dim=1, keepdim=True) + torch.tensor(reused, device=device)[:, None]
    decoder, _ = decoder_and_head(model)
    out = decoder(
        input_ids=tail_ids.to(device),
        attention_mask=torch.cat([prompt_mask, generated_mask.to(device), tail_mask.to(device)], dim=1),
        position_ids=start + torch.arange(width, device=device),
        cache=cache,
        use_cache=True,
        output_hidden_states=keep_layer is not None,
    )
    last = torch.tensor([len(t) - 1 for t in tails], device=device)
    final = out.last_hidden_state[torch.arange(n_rows, device=device), last].float()
    if keep_layer is None:
        return final, None
    kept = out.hidden_states[keep_layer]
    return final, [kept[row, : len(tail)] for row, tail in enumerate(tails)]


@torch.no_grad()
def generate_rollouts(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    settings: GenerationSettings,
    num_return_sequences: int = 1,
    read_vectors: bool = False,
    keep_layer: int | None = None,
    share_prefix: bool = True,
    score_tokens: bool = False,
) -> Rollouts:
    """Reason for every prompt (``num_return_sequences`` rollouts each, consecutive rows per prompt).

    ``read_vectors`` also returns each row's raw user vector, read on the KV cache (no second forward).
    ``keep_layer`` also returns, per row, the hidden states entering that layer at every real token of
    prompt + reasoning + ``<answer>``: another set of upper layers (a ranking adapter) can then read the row
    without running the lower layers again (``Rollouts.layer_states``).
    ``score_tokens`` (greedy decoding only) also returns each row's mean token log-probability under the
    generating model (``Rollouts.mean_logprob``): the fluency of text the untouched backbone wrote, at no extra
    forward.
    ``share_prefix``: the prompts' common beginning (system turn and instructions, ~67 of ~180 tokens of a
    compact ML-100k prompt) is run once and its KV cache reused by every batch (greedy: the same tokens).
    """
    if score_tokens and settings.do_sample:
        raise ValueError("score_tokens needs greedy decoding (sampling scores are not the model's own)")
    started = time.perf_counter()
    answer_ids = tokenizer(ANSWER, add_special_tokens=False).input_ids
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    finished: dict[int, list[tuple[list[int], int]]] = {}
    vectors: dict[int, torch.Tensor] = {}
    layer_states: dict[int, list[torch.Tensor]] = {}
    logprobs: dict[int, list[float]] = {}
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    n_shared = shared_prefix_length(prompts) if share_prefix and num_return_sequences == 1 else 0
    prefix = _encode_prefix(model, prompts[0][:n_shared], keep_layer) if n_shared >= MIN_SHARED_PREFIX else None
    n_shared = n_shared if prefix is not None else 0
    for start in range(0, len(order), settings.batch_size):
        chunk = order[start : start + settings.batch_size]
        step0_ids, step0_mask = left_pad([prompts[i][n_shared:] for i in chunk], tokenizer.pad_token_id)
        ids, mask, reuse = step0_ids, step0_mask, {}
        if prefix is not None:
            ids = torch.cat([torch.tensor(prompts[0][:n_shared]).expand(len(chunk), -1), step0_ids], dim=1)
            mask = torch.cat([torch.ones((len(chunk), n_shared), dtype=torch.long), step0_mask], dim=1)
            cache = copy.deepcopy(prefix.cache)
            cache.batch_repeat_interleave(len(chunk))
            reuse = {"cache": cache}
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
            return_dict_in_generate=True,
            output_hidden_states=keep_layer is not None,
            output_logits=score_tokens,
            **reuse,
            **sampling,
        )
        generated = out.sequences[:, ids.shape[1] :].tolist()
        chunk_rows = [_finish(row, tokenizer, answer_ids) for row in generated]
        if score_tokens:
            chunk_logprobs = _mean_logprobs(out.logits, out.sequences[:, ids.shape[1] :], chunk_rows)
        if read_vectors or keep_layer is not None:
            prompt_mask = mask.to(device).repeat_interleave(num_return_sequences, dim=0)
            states, tails = states_after_generation(
                model, out.cache, prompt_mask, len(generated[0]), chunk_rows, keep_layer
            )
        if keep_layer is not None:
            shared = prefix.states if prefix is not None else None
            rows_states = _layer_states(out.hidden_states, keep_layer, step0_mask, shared, chunk_rows, tails)
        for j, prompt_index in enumerate(chunk):
            rows = slice(j * num_return_sequences, (j + 1) * num_return_sequences)
            finished[prompt_index] = chunk_rows[rows]
            if score_tokens:
                logprobs[prompt_index] = chunk_logprobs[rows]
            if read_vectors:
                vectors[prompt_index] = states[rows].cpu()
            if keep_layer is not None:
                layer_states[prompt_index] = rows_states[rows]
    model.train(was_training)

    sequences, completion_spans, rationales, stopped = [], [], [], []
    for i in range(len(prompts)):
        for tokens, n_generated in finished[i]:
            sequences.append([*prompts[i], *tokens])
            completion_spans.append((len(tokens), n_generated))
            stopped.append(len(tokens) == n_generated)
            text = tokenizer.decode(tokens[:n_generated], skip_special_tokens=True).split(ANSWER)[0]
            rationales.append(clean_text(text, settings.max_rationale_chars))
    input_ids, attention_mask = left_pad(sequences, tokenizer.pad_token_id)
    completion_mask = torch.zeros_like(attention_mask)
    width = input_ids.shape[1]
    for row, (n_tokens, n_generated) in enumerate(completion_spans):
        completion_mask[row, width - n_tokens : width - n_tokens + n_generated] = 1
    stacked = torch.cat([vectors[i] for i in range(len(prompts))]) if read_vectors else None
    kept = [state for i in range(len(prompts)) for state in layer_states[i]] if keep_layer is not None else None
    seconds = {"generation": time.perf_counter() - started}
    means = [value for i in range(len(prompts)) for value in logprobs[i]] if score_tokens else None
    return Rollouts(input_ids, attention_mask, completion_mask, rationales, stopped, stacked, kept, seconds, means)


def _mean_logprobs(
    logits: tuple[torch.Tensor, ...], generated: torch.Tensor, finished: list[tuple[list[int], int]]
) -> list[float]:
    """Per row, the mean log-probability the generating model gave its own kept reasoning tokens (NaN for none).

    Greedy decoding only: ``generate``'s raw logits then score exactly the tokens it chose.
    """
    steps = torch.stack(logits, dim=1).float()  # (B, T, vocab)
    chosen = torch.log_softmax(steps, dim=-1).gather(2, generated[:, : steps.shape[1], None])[..., 0]
    return [float(chosen[row, :n].mean()) if n else float("nan") for row, (_, n) in enumerate(finished)]


def _layer_states(
    hidden: tuple[tuple[torch.Tensor, ...], ...],
    layer: int,
    step0_mask: torch.Tensor,
    shared: torch.Tensor | None,
    finished: list[tuple[list[int], int]],
    tails: list[torch.Tensor],
) -> list[torch.Tensor]:
    """Per row, states entering ``layer`` for prompt + generated tokens fed during generation + the fed tail.

    ``hidden`` is ``generate``'s per-step tuple: step 0 covers the prompt positions it computed (``step0_mask``;
    a shared prefix, computed once, has its states in ``shared``), step t >= 1 the token generated at t - 1. A
    row's first ``max(n_generated - 1, 0)`` generated tokens come from there; the rest (its last token and an
    appended marker) were fed after generation, as ``states_after_generation`` did.
    """
    out = []
    for row, ((_, n_generated), tail) in enumerate(zip(finished, tails, strict=True)):
        prompt = hidden[0][layer][row, step0_mask.shape[1] - int(step0_mask[row].sum()) :]
        fed = [hidden[step][layer][row] for step in range(1, max(n_generated - 1, 0) + 1)]
        parts = [prompt, *fed, tail] if shared is None else [shared.to(prompt.device), prompt, *fed, tail]
        out.append(torch.cat(parts).cpu())
    return out


MIN_SHARED_PREFIX = 16  # shorter common beginnings are not worth a cache copy per batch


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the prompts' common beginning, leaving every prompt at least one token of its own."""
    shortest = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for i in range(max(shortest, 0)):
        if any(p[i] != first[i] for p in prompts):
            return i
    return max(shortest, 0)


@dataclass(frozen=True)
class _Prefix:
    cache: Cache  # KV cache of the shared prefix, batch 1
    states: torch.Tensor | None  # (P, d) states entering ``keep_layer``, when asked


@torch.no_grad()
def _encode_prefix(model: nn.Module, ids: Sequence[int], keep_layer: int | None) -> _Prefix:
    device = next(model.parameters()).device
    out = model(
        input_ids=torch.tensor([list(ids)], device=device), use_cache=True, output_hidden_states=keep_layer is not None
    )
    return _Prefix(out.past_key_values, out.hidden_states[keep_layer][0] if keep_layer is not None else None)
