"""RRHF from the SFT adapter: candidates = SFT samples + ground truth + teacher revisions, ranked by the reward.

    accelerate launch baselines/rrhf.py --config baselines/configs/rrhf_demo.yaml
    ... --reward gold --reward_model ''    # ranked by the verifiable gold reward instead of a reward model

``--reward model`` (default) scores with ``--reward_model``; ``--reward gold`` with the gold answers of the training
rows. The choice is recorded in ``<output_dir>/reward.json``; skipped groups are counted in
``<output_dir>/candidates.stats.json``.
"""

import logging
from pathlib import Path

from accelerate import PartialState
from peft import get_peft_model
from trl import ModelConfig, TrlParser

from citing_trl.baselines.common import (
    BaselineArguments,
    RewardArguments,
    SamplingArguments,
    load_policy,
    run_revisions,
)
from citing_trl.baselines.ranks import end_ranks
from citing_trl.baselines.reward_model import reward_for_run, write_reward_info
from citing_trl.baselines.rrhf import RRHFConfig, RRHFTrainer, build_candidates_on_ranks
from citing_trl.cli import run_main
from citing_trl.distributed import check_engine, save_adapter
from citing_trl.errors import ConfigError, DataError
from citing_trl.jsonl import read_jsonl
from citing_trl.sft import DataArguments, load_rows


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_args, base_args, reward_args, args, model_args, sampling_args = TrlParser(
        (DataArguments, BaselineArguments, RewardArguments, RRHFConfig, ModelConfig, SamplingArguments)
    ).parse_args_and_config()
    if base_args.candidates_file:
        rows = [{"id": str(r.get("id") or n), **r} for n, r in enumerate(read_jsonl(base_args.candidates_file))]
    else:
        rows = load_rows(data_args).to_list()
    if reward_args.reward == "gold" and any(r.get("scores") for r in rows):
        raise ConfigError(f"--candidates_file {base_args.candidates_file}: its rows carry scores, which contradicts "
                          "--reward gold (the gold reward scores every candidate itself); drop the scores or use "
                          "--reward model", flag="candidates_file")
    scorer, info = reward_for_run(reward_args.reward, base_args.reward_model, rows, "RRHF",
                                  need_model=any(not r.get("scores") for r in rows))
    if PartialState().is_main_process:
        write_reward_info(args.output_dir, info)
    model, tokenizer, peft_config = load_policy(model_args, base_args.sft_adapter)
    if peft_config is not None:
        model = get_peft_model(model, peft_config)
    model.to(PartialState().device)  # each rank samples its slice of the prompts on its own device
    records, stats = build_candidates_on_ranks(rows, model, tokenizer, scorer, args, Path(args.output_dir) / "candidates.jsonl",
                                               run_revisions(base_args.citing_run), sampling=sampling_args.build())
    del scorer
    logging.getLogger("rrhf").info("RRHF candidates: %s", dict(stats))
    if not records:
        raise DataError(f"RRHF: no prompt is left to rank ({dict(stats)}; all-equal groups cannot be ranked)")
    model.train()
    trainer = RRHFTrainer(model, args, train_dataset=records, processing_class=tokenizer)
    check_engine(trainer.accelerator)
    trainer.train()
    save_adapter(trainer, args.output_dir)
    skipped = {k: v for k, v in stats.items() if k != "prompts" and v}
    if trainer.accelerator.is_main_process:
        print(f"RRHF adapter saved to {args.output_dir} ({len(records)} prompts trained; reward: {info['label']}; "
              f"skipped/dropped: {skipped or 'none'}, see candidates.stats.json)")


if __name__ == "__main__":
    run_main(main)  # a user error (bad flag, missing file, bad row) prints one line, exit 2
    end_ranks()  # after main returned: no trainer holds the process group any more
