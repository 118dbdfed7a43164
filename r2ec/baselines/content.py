"""An item-id-free content model: what genres and release year alone say about a user's next item.

R²ec's item tower reads an item's text: its title, genres and release year. A 135M model knows next to nothing
about the films behind ML-100k's titles, so what that text can carry over to an item it never trained on is, at
most, the genres and the year. This model learns from exactly those, with no item id anywhere: an item unseen in
training is scored like any other. On the cold-start and held-out-item slices it shows what the item text could
give without knowing the films.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from r2ec.baselines.early_stopping import EarlyStopping
from r2ec.data.samples import PAD, PreparedData, Samples
from r2ec.new_item_slots import release_years
from r2ec.recommender import Recommender

RECENT_YEARS = 10  # release years this close to the newest one get a feature each; older ones one per decade


@dataclass(frozen=True)
class ContentConfig:
    """Hyper-parameters of :class:`ContentModel`.

    Model:
        hidden_size: width of the user and item vectors (64).

    Training (full softmax over the catalogue, as SASRec):
        lr: Adam learning rate.
        batch_size: samples per optimizer step.
        max_epochs: upper bound on passes over the train split.
        patience: epochs without a better validation NDCG@10 before stopping; best weights are restored.
        seed: seeds initialisation and shuffling.
    """

    hidden_size: int = 64
    lr: float = 1e-3
    batch_size: int = 512
    max_epochs: int = 50
    patience: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.hidden_size, self.batch_size, self.max_epochs, self.patience) < 1:
            raise ValueError("hidden_size, batch_size, max_epochs and patience must be >= 1")


def _genre_lists(items: pd.DataFrame) -> list[list[str]]:
    if "genres" not in items.columns:
        return [[] for _ in range(len(items))]
    return [[g.strip() for g in str(text).split(",") if g.strip()] if pd.notna(text) else [] for text in items.genres]


def _year_bucket(year: float, newest: float) -> str:
    """'1997' for a recent release, '1950s' for an older one, 'unknown' without a year."""
    if not np.isfinite(year):
        return "unknown"
    return str(int(year)) if year > newest - RECENT_YEARS else f"{int(year) // 10 * 10}s"


def item_features(data: PreparedData) -> torch.Tensor:
    """(n_items, F) 0/1 features: one per genre, one per recent release year, one per older decade, one for an
    unknown year. Nothing in them tells two items of the same genres and year apart."""
    genre_lists = _genre_lists(data.items)
    years = release_years(data) if "year" in data.items else np.full(data.n_items, np.nan)
    newest = np.nanmax(years) if np.isfinite(years).any() else 0.0
    labels = [[*genres, _year_bucket(year, newest)] for genres, year in zip(genre_lists, years, strict=True)]
    columns = {label: i for i, label in enumerate(sorted({label for row in labels for label in row}))}
    features = torch.zeros(data.n_items, len(columns))
    for row, row_labels in enumerate(labels):
        features[row, [columns[label] for label in row_labels]] = 1.0
    return features


class ContentNetwork(nn.Module):
    """Item vector from the item's features; user vector from the mean and the last of its history's features."""

    def __init__(self, n_features: int, config: ContentConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.item_tower = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.user_tower = nn.Sequential(nn.Linear(2 * n_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

    def forward(self, history: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """(B, n_items) scores; ``history``: (B, L) catalogue indices, PAD-padded; ``features``: (n_items, F)."""
        real = history != PAD
        rows = features[history.clamp_min(0)] * real[..., None]  # (B, L, F)
        mean = rows.sum(1) / real.sum(1, keepdim=True).clamp_min(1)
        last = rows[torch.arange(len(history)), (real.sum(1) - 1).clamp_min(0)]
        return self.user_tower(torch.cat([mean, last], dim=1)) @ self.item_tower(features).T


class ContentModel(Recommender):
    """The content model behind the common :class:`~r2ec.recommender.Recommender` contract."""

    name = "content"

    def __init__(self, config: ContentConfig | None = None) -> None:
        self.config = config or ContentConfig()
        self.network: ContentNetwork | None = None
        self.features = torch.empty(0)

    def fit(self, data: PreparedData, progress: bool = False) -> dict[str, Any]:
        """Train on ``data.train`` with early stopping on validation NDCG@10; restore the best weights."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        self.features = item_features(data)
        self.network = ContentNetwork(self.features.shape[1], cfg)
        optimizer = torch.optim.Adam(self.network.parameters(), lr=cfg.lr)
        histories, targets = torch.from_numpy(data.train.history), torch.from_numpy(data.train.target)
        started = time.perf_counter()
        stopping = EarlyStopping(self, self.network, data.valid, cfg.patience)
        bar = tqdm(range(1, cfg.max_epochs + 1), disable=not progress, desc=f"{self.name} epochs")
        for epoch in bar:
            self.network.train()
            for batch in torch.randperm(len(targets), generator=generator).split(cfg.batch_size):
                loss = nn.functional.cross_entropy(self.network(histories[batch], self.features), targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            stop = stopping.should_stop(epoch)
            bar.set_postfix(valid_ndcg10=f"{stopping.last_score:.4f}", best=stopping.best_epoch)
            if stop:
                break
        return {
            **stopping.finish(),
            "samples_seen": stopping.epochs * len(targets),
            "features": int(self.features.shape[1]),
            "train_s": round(time.perf_counter() - started, 1),
        }

    @torch.no_grad()
    def full_sort_predict(self, batch: Samples) -> torch.Tensor:
        if self.network is None:
            raise RuntimeError("ContentModel.fit must run before scoring")
        return self.network(torch.from_numpy(batch.history), self.features)
