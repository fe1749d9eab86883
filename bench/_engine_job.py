"""One rank of bench/bench_engines.py's job: LoRA SFT on a random Llama for a few steps under whatever engine the
launcher's accelerate config sets up; writes this rank's peak RSS, step times and the engine report as JSON."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._t = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)


def main() -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from citing_trl.distributed import check_engine, engine_report

    model_dir, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Describe item {i} in detail."}],
                               "completion": [{"role": "assistant", "content": f"Item {i} is small, blue and round. " * 8}]}
                              for i in range(64)])
    args = SFTConfig(output_dir=str(out), use_cpu=True, bf16=False, report_to="none", max_steps=steps,
                     per_device_train_batch_size=2, max_length=256, gradient_checkpointing=False, save_strategy="no",
                     logging_steps=steps, disable_tqdm=True, learning_rate=1e-4, seed=0)
    timer = StepTimer()
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer, callbacks=[timer],
                         peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                                task_type="CAUSAL_LM"))
    check_engine(trainer.accelerator)
    trainer.train()
    report = engine_report(trainer.accelerator, trainer.model_wrapped)
    rank = trainer.accelerator.process_index
    (out / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "engine": report, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "step_s": timer.times}))


if __name__ == "__main__":
    main()
