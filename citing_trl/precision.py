"""bf16 training on a CPU: used where the processor computes bf16 natively, refused with one line where it does not.

On a GPU, ``bf16: true`` is transformers' own business (it checks the device). On a CPU, torch's autocast accepts
bf16 anywhere, but only processors with bf16 instructions (x86 ``avx512_bf16`` or ``amx_bf16``, ARM ``bf16``) run
it faster than fp32; elsewhere it is emulated and slower. A config that says ``bf16: true`` therefore trains in
bf16 on such a CPU and falls back to fp32 on any other, saying so in one warning line. Detected from the
processor's flags, never assumed.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 (AMX, AVX-512 BF16) and aarch64 (FEAT_BF16)


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The processor's feature flags from ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``); empty where absent."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    return any(flag in cpu_flags(cpuinfo) for flag in CPU_BF16_FLAGS)


def on_cpu(args) -> bool:
    import torch

    return bool(getattr(args, "use_cpu", False)) or not torch.cuda.is_available()


def fall_back_from_bf16(args, cpuinfo: str | None = None) -> None:
    """Call in a training config's ``__post_init__`` before TrainingArguments': ``bf16`` stays on only where it is
    native (a GPU, or a CPU with bf16 instructions); otherwise it is switched off with one warning line."""
    if getattr(args, "bf16", False) and on_cpu(args) and not cpu_has_native_bf16(cpuinfo):
        logger.warning("bf16: this CPU has no bf16 instructions (%s), so training runs in float32; "
                       "set --bf16 false to silence this", "/".join(CPU_BF16_FLAGS))
        args.bf16 = False


class NativeBf16:
    """Mixin placed before a ``TrainingArguments`` subclass (``class C(NativeBf16, SFTConfig)``): runs
    :func:`fall_back_from_bf16` before the training arguments settle their mixed precision."""

    def __post_init__(self):
        fall_back_from_bf16(self)
        super().__post_init__()
