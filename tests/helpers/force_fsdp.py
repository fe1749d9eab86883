"""Test-only launcher shim: ``python force_fsdp.py SCRIPT ARGS...`` runs SCRIPT with accelerate's state turned into
FSDP where accelerate would set up plain data parallel.

Why it exists: accelerate 1.16 enables FSDP only for GPU-like devices, so on a CPU-only machine ``fsdp.yaml`` gives
MULTI_CPU (DDP) and the project's launchers refuse to run (``citing_trl.distributed.check_engine``). FSDP2 itself
(``fully_shard``) runs on CPU tensors over gloo, so forcing the state lets the tests run the real FSDP code paths —
sharding, the gathered save, PPO's gather — with two CPU ranks. Nothing outside tests/ and bench/ uses it.
"""

from __future__ import annotations

import runpy
import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


def _init_forcing_fsdp(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP


AcceleratorState.__init__ = _init_forcing_fsdp

if __name__ == "__main__":
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
