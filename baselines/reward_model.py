"""Train the reward model (TRL RewardTrainer + LoRA on the student's backbone) and report held-out pair accuracy.

    accelerate launch baselines/reward_model.py --config baselines/configs/reward_model_demo.yaml
"""

import logging

from trl import ModelConfig, TrlParser

from citing_trl.baselines.preferences import PreferenceArguments
from citing_trl.baselines.ranks import end_ranks
from citing_trl.baselines.reward_model import RewardModelConfig, train_reward_model
from citing_trl.cli import run_main


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pref_args, training_args, model_args = TrlParser(
        (PreferenceArguments, RewardModelConfig, ModelConfig)).parse_args_and_config()
    _, metrics = train_reward_model(pref_args, training_args, model_args)
    if training_args.process_index == 0:  # the main process alone scores the held-out pairs
        print(f"reward model saved to {training_args.output_dir}: {metrics}")


if __name__ == "__main__":
    run_main(main)  # a user error (bad flag, missing file, bad pair) prints one line, exit 2
    end_ranks()  # after main returned: no trainer holds the process group any more
