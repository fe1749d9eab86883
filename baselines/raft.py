"""RAFT from the SFT adapter: T stages of sample K -> rank by the reward model -> fine-tune on the best.

    accelerate launch --num_processes 1 baselines/raft.py --config baselines/configs/raft_demo.yaml
"""

import logging

from trl import ModelConfig, TrlParser

from citing_trl.baselines.common import BaselineArguments, SamplingArguments
from citing_trl.baselines.raft import RAFTConfig, RAFTTrainer
from citing_trl.baselines.ranks import end_ranks
from citing_trl.reward import RewardScorer
from citing_trl.cli import run_main
from citing_trl.errors import ConfigError
from citing_trl.sft import DataArguments, load_rows


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_args, base_args, args, model_args, sampling_args = TrlParser(
        (DataArguments, BaselineArguments, RAFTConfig, ModelConfig, SamplingArguments)).parse_args_and_config()
    if not base_args.reward_model:
        raise ConfigError("RAFT needs --reward_model (a folder written by baselines/reward_model.py)", flag="reward_model")
    scorer = RewardScorer.load(base_args.reward_model)
    out = RAFTTrainer(args, model_args, load_rows(data_args).to_list(), scorer,
                      sft_adapter=base_args.sft_adapter, sampling=sampling_args.build()).train()
    if args.process_index == 0:
        print(f"RAFT adapter saved to {out}; per-stage rewards in {out}/stages.jsonl")


if __name__ == "__main__":
    run_main(main)  # a user error (bad flag, missing file, bad row) prints one line, exit 2
    end_ranks()  # after main returned: no trainer holds the process group any more
