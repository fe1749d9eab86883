"""RRHF from the SFT adapter: candidates = SFT samples + ground truth + teacher revisions, ranked by the reward model.

    accelerate launch baselines/rrhf.py --config baselines/configs/rrhf_demo.yaml
"""

import logging
from pathlib import Path

from accelerate import PartialState
from peft import get_peft_model
from trl import ModelConfig, TrlParser

from citing_trl.baselines.common import BaselineArguments, SamplingArguments, load_policy, teacher_revisions
from citing_trl.reward import RewardScorer
from citing_trl.baselines.ranks import end_ranks
from citing_trl.baselines.rrhf import RRHFConfig, RRHFTrainer, build_candidates_on_ranks
from citing_trl.cli import run_main
from citing_trl.jsonl import read_jsonl
from citing_trl.sft import DataArguments, load_rows


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_args, base_args, args, model_args, sampling_args = TrlParser(
        (DataArguments, BaselineArguments, RRHFConfig, ModelConfig, SamplingArguments)).parse_args_and_config()
    if base_args.candidates_file:
        rows = [{"id": str(r.get("id") or n), **r} for n, r in enumerate(read_jsonl(base_args.candidates_file))]
    else:
        rows = load_rows(data_args).to_list()
    model, tokenizer, peft_config = load_policy(model_args, base_args.sft_adapter)
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    scorer = RewardScorer.load(base_args.reward_model) if base_args.reward_model else None
    model.to(PartialState().device)  # each rank samples its slice of the prompts on its own device
    records, stats = build_candidates_on_ranks(rows, model, tokenizer, scorer, args, Path(args.output_dir) / "candidates.jsonl",
                                               teacher_revisions(base_args.citing_run), sampling=sampling_args.build())
    del scorer
    logging.getLogger("rrhf").info("RRHF candidates: %s", dict(stats))
    model.train()
    trainer = RRHFTrainer(model, args, train_dataset=records, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(args.output_dir)
    if trainer.accelerator.is_main_process:
        print(f"RRHF adapter saved to {args.output_dir} ({len(records)} prompts)")


if __name__ == "__main__":
    run_main(main)  # a user error (bad flag, missing file, bad row) prints one line, exit 2
    end_ranks()  # after main returned: no trainer holds the process group any more
