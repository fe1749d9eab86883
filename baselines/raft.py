"""RAFT from the SFT adapter: T stages of sample K -> rank by the reward -> fine-tune on the best.

    accelerate launch --num_processes 1 baselines/raft.py --config baselines/configs/raft_demo.yaml
    ... --reward gold --reward_model ''    # rejection-sampling fine-tuning on the verifiable gold reward

``--reward model`` (default) ranks with ``--reward_model``; ``--reward gold`` with the gold answers of the training
rows (only right answers are kept). The choice is recorded in ``<output_dir>/reward.json``.
"""

import logging

from trl import ModelConfig, TrlParser

from citing_trl.baselines.common import BaselineArguments, RewardArguments, SamplingArguments
from citing_trl.baselines.raft import RAFTConfig, RAFTTrainer
from citing_trl.baselines.ranks import end_ranks
from citing_trl.baselines.reward_model import reward_for_run, write_reward_info
from citing_trl.cli import run_main
from citing_trl.sft import DataArguments, load_rows


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_args, base_args, reward_args, args, model_args, sampling_args = TrlParser(
        (DataArguments, BaselineArguments, RewardArguments, RAFTConfig, ModelConfig, SamplingArguments)
    ).parse_args_and_config()
    rows = load_rows(data_args).to_list()
    scorer, info = reward_for_run(reward_args.reward, base_args.reward_model, rows, "RAFT")
    if reward_args.reward == "gold" and args.min_reward is None:
        args.min_reward = 1.0  # rejection sampling: keep right answers only
    if args.process_index == 0:
        write_reward_info(args.output_dir, {**info, "min_reward": args.min_reward})
    out = RAFTTrainer(args, model_args, rows, scorer, sft_adapter=base_args.sft_adapter,
                      sampling=sampling_args.build()).train()
    if args.process_index == 0:
        print(f"RAFT adapter saved to {out}; per-stage rewards in {out}/stages.jsonl; reward: {info['label']}")


if __name__ == "__main__":
    run_main(main)  # a user error (bad flag, missing file, bad row) prints one line, exit 2
    end_ranks()  # after main returned: no trainer holds the process group any more
