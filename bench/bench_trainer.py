"""CitingTrainer vs plain SFTTrainer step time on the same prompt/completion rows (SmolLM2-135M + LoRA).

CitingTrainer is an SFTTrainer subclass whose only extra work is building the revision rows once; this
measures that the training step itself costs the same.

    python bench/bench_trainer.py [--steps 8] [--batch-size 4]
"""

import argparse
import json
import tempfile
import time

from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from citing_trl.citing_trainer import CitingConfig, CitingTrainer, build_citing_dataset
from citing_trl.data import load_demo
from citing_trl.models import load_model


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._t = [], None

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t)


def revision_rows(n, criteria="- Be accurate.\n- Be complete."):
    """n CITING revision rows from the demo data (cycled past its end): r(k) is the first half of the demo
    answer, r(k+1) the whole answer."""
    demo = load_demo()
    return Dataset.from_list([
        {"instruction": r["instruction"], "input": r["input"], "criteria": criteria,
         "response": r["output"][: len(r["output"]) // 2], "revision": r["output"]}
        for r in (demo[i % len(demo)] for i in range(n))
    ])


def run(kind, rows, steps, bs, model_name):
    model, tok = load_model(model_name)
    model.train()
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    common = dict(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, report_to="none", max_steps=steps,
                  per_device_train_batch_size=bs, save_strategy="no", gradient_checkpointing=False, max_length=512,
                  logging_steps=1000, seed=0)
    timer = StepTimer()
    if kind == "citing":
        trainer = CitingTrainer(model=model, args=CitingConfig(**common), revision_dataset=rows,
                                processing_class=tok, peft_config=lora, callbacks=[timer])
    else:
        trainer = SFTTrainer(model=model, args=SFTConfig(**common, completion_only_loss=True),
                             train_dataset=build_citing_dataset(rows), processing_class=tok, peft_config=lora,
                             callbacks=[timer])
    trainer.train()
    steady = timer.times[1:] or timer.times  # first step includes lazy initialisation
    return sum(steady) / len(steady)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    rows = revision_rows(a.steps * a.batch_size)
    t_sft = run("sft", rows, a.steps, a.batch_size, a.model)
    t_cit = run("citing", rows, a.steps, a.batch_size, a.model)
    print(f"rows={len(rows)} steps={a.steps} batch={a.batch_size}")
    print(f"SFTTrainer    : {t_sft:.3f} s/step")
    print(f"CitingTrainer : {t_cit:.3f} s/step")
    print(f"ratio CitingTrainer/SFTTrainer: {t_cit / t_sft:.3f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"rows": len(rows), "steps": a.steps, "batch_size": a.batch_size, "sft_s_per_step": t_sft,
                       "citing_s_per_step": t_cit, "ratio": t_cit / t_sft}, fh, indent=2)


if __name__ == "__main__":
    main()
