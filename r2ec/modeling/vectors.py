"""Reading vectors out of the LM: the final-norm hidden state at the last real token of each row.

Rows may be left- or right-padded: positions are derived from the attention mask (so padding never
shifts the rotary positions) and the last real token is found from the mask, never a pad position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The decoder stack (ends with the final norm) and the LM head, through a peft wrapper if any."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.lm_head


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) position ids that count only real tokens, identical for any padding side."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp_min(0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last real token of each row (works for left and right padding)."""
    width = attention_mask.shape[1]
    return width - 1 - attention_mask.long().flip(dims=[1]).argmax(dim=1)


def run_layers(
    model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int
) -> torch.Tensor:
    """Decoder layers ``[start, stop)`` on (B, T, d) hidden states (layer 0's input = token embeddings).

    Split runs let the frozen lower layers be computed once and cached; the split result equals the
    decoder's own forward (tested).
    """
    from transformers.masking_utils import create_causal_mask

    decoder, _ = decoder_and_head(model)
    positions = positions_from_mask(attention_mask)
    causal = create_causal_mask(
        config=decoder.config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None, position_ids=positions
    )
    rotary = decoder.rotary_emb(hidden, position_ids=positions)
    for layer in decoder.layers[start:stop]:
        hidden = layer(hidden, attention_mask=causal, position_embeddings=rotary, position_ids=positions)
    return hidden


def n_layers(model: nn.Module) -> int:
    return int(decoder_and_head(model)[0].config.num_hidden_layers)


def embed(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, T, d) token embeddings: the input of layer 0."""
    return decoder_and_head(model)[0].embed_tokens(input_ids)


def final_norm(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return decoder_and_head(model)[0].norm(hidden)


def hidden_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d) final-norm hidden states of every position."""
    decoder, _ = decoder_and_head(model)
    return decoder(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions_from_mask(attention_mask)
    ).last_hidden_state


def at_last_token(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, d) float32 rows of (B, T, d) ``states`` at each row's last real token."""
    rows = torch.arange(states.shape[0], device=states.device)
    return states[rows, last_token_index(attention_mask)].float()


def last_hidden_from_layer(model: nn.Module, states: Sequence[torch.Tensor], start: int) -> torch.Tensor:
    """(k, d) float32 raw vectors of rows whose states entering layer ``start`` are known ((T_row, d) each).

    The rows are left-padded, run through layers ``[start, n)`` and the final norm, and read at their last token:
    what a full forward gives when the layers below ``start`` compute the same (frozen, or shared between roles).
    """
    width = max(len(row) for row in states)
    hidden = states[0].new_zeros((len(states), width, states[0].shape[-1]))
    mask = torch.zeros((len(states), width), dtype=torch.long, device=states[0].device)
    for i, row in enumerate(states):
        hidden[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    top = run_layers(model, hidden, mask, start, n_layers(model))
    return at_last_token(final_norm(model, top), mask)


def last_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, d) float32 hidden state at each row's last real token: the user or item vector, raw."""
    return at_last_token(hidden_states(model, input_ids, attention_mask), attention_mask)
