"""recipes/citing.py with one addition, for the two-rank tests: after each round's training every rank writes
the digest of its own trainable (LoRA) weights to ``round_<k>/lora_digest.rank<r>.json``, so a test can check
that data-parallel ranks end a round with the same weights. Run it as the recipe:

    accelerate launch --config_file accelerate_configs/cpu_2proc.yaml tests/helpers/rank_digest.py --config x.yaml
"""

from __future__ import annotations

import hashlib
import json
import runpy
import sys
from pathlib import Path

import torch

from citing_trl.pipeline import CitingPipeline

REPO = Path(__file__).resolve().parents[2]


def lora_digest(model) -> str:
    """SHA-256 over the trainable parameters' names and bytes (float32), in name order."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


_train_round = CitingPipeline._train_round


def _train_round_with_digest(self, k, adapter, result, rubric, rdir):
    trainer = _train_round(self, k, adapter, result, rubric, rdir)
    model = trainer.accelerator.unwrap_model(trainer.model)
    record = {"rank": self.state.process_index, "digest": lora_digest(model)}
    (Path(rdir) / f"lora_digest.rank{self.state.process_index}.json").write_text(json.dumps(record))
    return trainer


CitingPipeline._train_round = _train_round_with_digest

if __name__ == "__main__":
    sys.argv[0] = str(REPO / "recipes" / "citing.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
