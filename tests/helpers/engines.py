"""Launch a recipe with two gloo CPU ranks under one of the project's own accelerate configs, overriding only
``--num_processes 2`` and ``--mixed_precision``, and return what the run reported.

Engines: ``ddp`` (accelerate_configs/cpu_2proc.yaml), ``zero2`` / ``zero3`` (zero2.yaml / zero3.yaml: DeepSpeed's
CPU accelerator over gloo) and ``fsdp`` (fsdp.yaml, FSDP2; launched through :mod:`tests.helpers.force_fsdp`, see
there why). Every launcher prints ``citing-trl engine: {...}`` when it saves (the distributed type accelerate
set up, the ZeRO stage, whether this rank held only shards of the parameters): :class:`Launch` parses it, so a
test can check that the engine really ran. DeepSpeed compiles its shared-memory comm op once (~100 s on 2 cores)
into ``TORCH_EXTENSIONS_DIR``; every launch here uses the same folder (the environment's, else torch's default
``~/.cache/torch_extensions``), so the compile is paid once per machine.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from citing_trl.distributed import ENGINE_LINE

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {"ddp": "cpu_2proc.yaml", "zero2": "zero2.yaml", "zero3": "zero3.yaml", "fsdp": "fsdp.yaml"}
EXPECTED_TYPE = {"ddp": "MULTI_CPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp": "FSDP"}
FORCE_FSDP = REPO / "tests" / "helpers" / "force_fsdp.py"
TORCH_EXTENSIONS_DIR = os.environ.get("TORCH_EXTENSIONS_DIR") or str(Path.home() / ".cache" / "torch_extensions")


@dataclass
class Launch:
    proc: subprocess.CompletedProcess
    engines: list[dict] = field(default_factory=list)  # one per save, from the main process
    losses: list[float] = field(default_factory=list)  # the trainer's logged training losses, in order

    @property
    def log(self) -> str:
        return self.proc.stdout + self.proc.stderr


def launcher_env() -> dict:
    # in-process tests leave ACCELERATE_* / rank variables behind; inherited, they change what the launcher starts
    leaked = ("ACCELERATE_", "MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(leaked)}
    env.update(PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TORCH_EXTENSIONS_DIR=TORCH_EXTENSIONS_DIR)
    return env


def launch_command(script: str | Path, engine: str, *args, mixed_precision: str = "no") -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "accelerate_configs" / CONFIGS[engine]), "--num_processes", "2",
           "--mixed_precision", mixed_precision, "--main_process_port", "0"]
    if engine == "fsdp":
        cmd.append(str(FORCE_FSDP))
    # the shipped demo configs train in bf16 where the CPU has it (training config `bf16: true`, which outranks the
    # launcher's --mixed_precision): say the precision to the recipe too, so `no` really is fp32
    return [*cmd, str(script), *map(str, args), "--bf16", str(mixed_precision == "bf16")]


def parse_losses(stdout: str) -> list[float]:
    losses = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{") and "'loss'" in line:
            try:
                losses.append(float(ast.literal_eval(line)["loss"]))
            except (ValueError, SyntaxError, KeyError):
                pass
    return losses


def launch(script: str | Path, engine: str, *args, mixed_precision: str = "no", timeout: int = 900,
           check: bool = True, env: dict | None = None, python_path: str | Path | None = None) -> Launch:
    """``accelerate launch --config_file accelerate_configs/<engine's config> --num_processes 2 --mixed_precision
    M script args``; with ``check``, a failed run fails the test with the end of its log. ``env`` adds variables;
    ``python_path`` a folder to import from."""
    environ = {**launcher_env(), **(env or {})}
    if python_path:
        environ["PYTHONPATH"] = f"{python_path}{os.pathsep}{environ['PYTHONPATH']}"
    proc = subprocess.run(launch_command(script, engine, *args, mixed_precision=mixed_precision), cwd=REPO,
                          env=environ, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{script} under {engine} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-5000:]}"
    engines = [json.loads(line.split(ENGINE_LINE, 1)[1]) for line in proc.stdout.splitlines() if ENGINE_LINE in line]
    return Launch(proc, engines, parse_losses(proc.stdout))


def assert_engine_ran(run: Launch, engine: str, mixed_precision: str = "no") -> dict:
    """The run reported the engine asked for (no silent DDP), on 2 ranks; ZeRO-3 and FSDP held only shards."""
    assert run.engines, f"no engine report in the output:\n{run.log[-3000:]}"
    report = run.engines[-1]
    assert report["distributed_type"] == EXPECTED_TYPE[engine], report
    assert report["num_processes"] == 2 and report["mixed_precision"] == mixed_precision, report
    if engine.startswith("zero"):
        assert report["zero_stage"] == int(engine[-1]), report
    if engine == "fsdp":
        assert report["fsdp_version"] == 2, report
    assert report.get("parameters_partitioned") is (engine in ("zero3", "fsdp")), report
    return report


def bf16_supported() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, by the rule the project itself uses to keep or drop `bf16: true`
    (citing_trl.precision); emulated bf16 is too slow to test with."""
    from citing_trl.precision import CPU_BF16_FLAGS, cpu_has_native_bf16

    if cpu_has_native_bf16():
        return True, ""
    return False, f"this CPU has no native bf16 (none of the flags {', '.join(CPU_BF16_FLAGS)})"
