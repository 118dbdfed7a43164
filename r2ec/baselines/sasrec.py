"""SASRec (Kang & McAuley, 2018) trained with softmax cross-entropy over the whole catalogue.

This is the "strong" SASRec setting the paper compares against: every catalogue item is a negative of
every training position (no sampled negatives). A causal Transformer reads the history, oldest first; the
output at the last real position is the user vector, scored against the item embedding table (tied input
and output embeddings).

Training reads every position of a history as a target (position j predicts item j + 1, the last position
predicts the sample's target); all of those items happened no later than the sample's target, which lies in
the train split, so nothing past the split leaks in. Consecutive samples of a user overlap in all but one
item, so an epoch trains one window every ``stride`` samples of each user (a random phase per user and
epoch): with ``stride = max_length`` each training interaction is a label about once per epoch, at ~1/20
of the cost of training every sample, and the varying phase shows each label with different contexts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from r2ec.baselines.early_stopping import EarlyStopping
from r2ec.data.samples import PAD, PreparedData, Samples
from r2ec.recommender import Recommender


@dataclass(frozen=True)
class SASRecConfig:
    """Hyper-parameters of :class:`SASRec`; defaults are the reference setting of issue 2.

    Model:
        hidden_size: width of item/position embeddings and of the Transformer (64).
        n_layers: Transformer blocks (2).
        n_heads: attention heads per block (2); must divide ``hidden_size``.
        inner_size: width of the feed-forward layer inside each block (4 x hidden).
        dropout: dropout on embeddings, attention weights and block outputs (0.5).
        max_length: positions the model reads; None = the data's history length (method.md §4: 20).

    Training:
        lr: Adam learning rate (1e-3).
        batch_size: samples per optimizer step.
        max_epochs: upper bound on passes over the train split.
        patience: epochs without a better validation NDCG@10 before stopping; best weights are restored.
        stride: train one window every ``stride`` samples of a user per epoch; None = ``max_length``.
        seed: seeds initialisation, dropout and shuffling, so two fits with the same seed are identical.
    """

    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner_size: int = 256
    dropout: float = 0.5
    max_length: int | None = None
    lr: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 200
    patience: int = 10
    stride: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.n_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by n_heads {self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if min(self.max_epochs, self.patience, self.batch_size, self.stride or 1) < 1:
            raise ValueError("max_epochs, patience, batch_size and stride must be >= 1")


class SASRecNetwork(nn.Module):
    """Item + position embeddings, a causal Transformer encoder, and dot-product scores against all items.

    Index 0 of the embedding table is padding; catalogue item ``i`` is row ``i + 1``.
    """

    def __init__(self, n_items: int, max_length: int, config: SASRecConfig) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_length, config.hidden_size)
        self.input_norm = nn.LayerNorm(config.hidden_size)
        self.input_dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(
            d_model=config.hidden_size,
            nhead=config.n_heads,
            dim_feedforward=config.inner_size,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
        )
        self.encoder = nn.TransformerEncoder(block, config.n_layers, enable_nested_tensor=False)
        causal = torch.triu(torch.full((max_length, max_length), -torch.inf), diagonal=1)
        self.register_buffer("causal_mask", causal, persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """Small normal init (std 0.02) as in BERT-style recommenders; zero padding row."""
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def encode(self, sequence: torch.Tensor) -> torch.Tensor:
        """Hidden state of every position.

        Args:
            sequence: (B, L) int64 embedding rows (0 = pad), right-padded, oldest first.
        Returns:
            (B, L, hidden) float32; position j has seen positions 0..j only.
        """
        length = sequence.shape[1]
        positions = torch.arange(length, device=sequence.device)
        x = self.item_embedding(sequence) + self.position_embedding(positions)[None]
        x = self.input_dropout(self.input_norm(x))
        return self.encoder(x, mask=self.causal_mask[:length, :length], is_causal=True)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> (..., n_items) dot products with every catalogue item (pad row excluded)."""
        return hidden @ self.item_embedding.weight[1:].T


def _samples_from_user_end(user_id: np.ndarray) -> np.ndarray:
    """(n,) how many later samples the same user has in this (time-ordered) split; 0 = the user's last."""
    order = np.argsort(user_id, kind="stable")
    users = user_id[order]
    starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
    ends = np.r_[starts[1:], len(users)]
    out = np.empty(len(users), dtype=np.int64)
    out[order] = np.repeat(ends, ends - starts) - 1 - np.arange(len(users))
    return out


def _rows(history: np.ndarray, max_length: int) -> torch.Tensor:
    """Right-padded catalogue histories (n, h) -> embedding rows (n, max_length), 0 = pad.

    Keeps each row's newest ``max_length`` items, oldest first, right-padded.
    """
    length = (history != PAD).sum(axis=1)
    index = np.maximum(length - max_length, 0)[:, None] + np.arange(max_length)[None]
    items = np.take_along_axis(history, np.minimum(index, history.shape[1] - 1), axis=1)
    return torch.from_numpy(np.where(index < length[:, None], items + 1, 0))


def _training_device() -> torch.device:
    """Train on the GPU when there is one (the same code runs on the CPU)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SASRec(Recommender):
    """SASRec baseline behind the common :class:`~r2ec.recommender.Recommender` contract."""

    name = "sasrec"

    def __init__(self, config: SASRecConfig | None = None) -> None:
        self.config = config or SASRecConfig()
        self.network: SASRecNetwork | None = None
        self.max_length = 0

    def _user_vectors(self, sequence: torch.Tensor) -> torch.Tensor:
        """(B, L) embedding rows -> (B, hidden): the output at each sequence's last real position."""
        assert self.network is not None
        hidden = self.network.encode(sequence)
        last = ((sequence != 0).sum(dim=1) - 1).clamp_min(0)
        return hidden[torch.arange(len(sequence), device=sequence.device), last]

    @property
    def _device(self) -> torch.device:
        assert self.network is not None
        return next(self.network.parameters()).device

    def _loss(self, sequence: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over all catalogue items at every real position.

        Args:
            sequence: (B, L) embedding rows of the histories (0 = pad).
            target: (B,) catalogue index of each sample's target.
        """
        assert self.network is not None
        # labels (B, L): the next history item at each position, the target after the last one, -100 on pads
        length = (sequence != 0).sum(dim=1)
        labels = torch.cat([sequence[:, 1:], torch.zeros_like(sequence[:, :1])], dim=1) - 1
        positions = torch.arange(sequence.shape[1], device=sequence.device)[None]
        labels = torch.where(positions == (length - 1)[:, None], target[:, None], labels)
        labels = torch.where(positions < length[:, None], labels, -100)
        logits = self.network.scores(self.network.encode(sequence))
        return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    def fit(self, data: PreparedData, progress: bool = False) -> dict[str, Any]:
        """Train on ``data.train`` with early stopping on validation NDCG@10; restore the best weights."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        self.max_length = cfg.max_length or data.train.history.shape[1]
        self.network = SASRecNetwork(data.n_items, self.max_length, cfg).to(_training_device())
        optimizer = torch.optim.Adam(self.network.parameters(), lr=cfg.lr)
        device = self._device
        stride = cfg.stride or self.max_length
        sequences = _rows(data.train.history, self.max_length)
        targets = torch.from_numpy(data.train.target)
        from_end = torch.from_numpy(_samples_from_user_end(data.train.user_id))
        user_code = torch.from_numpy(np.unique(data.train.user_id, return_inverse=True)[1].astype(np.int64))

        started = time.perf_counter()
        stopping = EarlyStopping(self, self.network, data.valid, cfg.patience)
        seen = 0
        bar = tqdm(range(1, cfg.max_epochs + 1), disable=not progress, desc="sasrec epochs")
        for epoch in bar:
            self.network.train()
            phase = torch.randint(stride, (int(user_code.max()) + 1,), generator=generator)[user_code]
            windows = torch.nonzero((from_end + phase) % stride == 0).squeeze(1)
            total = 0.0
            shuffled = windows[torch.randperm(len(windows), generator=generator)]
            for batch in shuffled.split(cfg.batch_size):
                loss = self._loss(sequences[batch].to(device), targets[batch].to(device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
                seen += len(batch)
            stop = stopping.should_stop(epoch)
            bar.set_postfix(
                loss=f"{total / len(windows):.3f}", valid_ndcg10=f"{stopping.last_score:.4f}", best=stopping.best_epoch
            )
            if stop:
                break
        return {**stopping.finish(), "samples_seen": seen, "train_s": round(time.perf_counter() - started, 1)}

    @torch.no_grad()
    def full_sort_predict(self, batch: Samples) -> torch.Tensor:
        if self.network is None:
            raise RuntimeError("SASRec.fit must run before scoring")
        was_training = self.network.training
        self.network.eval()
        rows = _rows(batch.history, self.max_length).to(self._device)
        scores = self.network.scores(self._user_vectors(rows)).cpu()
        self.network.train(was_training)
        return scores
