"""Helpers for tests of the model: tiny random backbones on the real tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from r2ec.modeling.backbone import LoraSettings
from r2ec.modeling.generation import GenerationSettings
from r2ec.modeling.prompts import PromptSettings
from r2ec.modeling.recommender import R2ecConfig, R2ecRecommender

# for tests that train: tau 0.1 instead of 0.02 (a 64-wide random model has little spread to scale); LoRA on both layers
LEARNING_MODEL = {"tau": 0.1, "lora": LoraSettings(rank=8, alpha=16, top_layers=2)}


def tiny_recommender(cache: Path, reasoning: bool, **changes) -> R2ecRecommender:
    """A 2-layer, 64-wide random Llama with LoRA on both layers, fp32, compact prompts."""
    defaults = {
        "backbone": "tiny",
        "dtype": "float32",
        "lora": LoraSettings(rank=8, alpha=16, top_layers=1),
        "prompts": PromptSettings(domain="items", history_items=8, show_time=False),
        "generation": GenerationSettings(max_new_tokens=6),
    }
    config = R2ecConfig(reasoning=reasoning, **{**defaults, **changes})
    return R2ecRecommender.create(config, cache)


def perturb_lora(recommender: R2ecRecommender, scale: float = 0.2) -> None:
    """Give the (zero-initialised) LoRA B matrices values so that adapters change the outputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in recommender.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, scale)
