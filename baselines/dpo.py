"""DPO on revision ≻ answer pairs (TRL DPOTrainer + LoRA), starting from the SFT adapter.

    accelerate launch baselines/dpo.py --config baselines/configs/dpo_demo.yaml
"""

import logging

from trl import ModelConfig, TrlParser

from citing_trl.baselines.common import BaselineArguments
from citing_trl.baselines.dpo import DPOConfig, run_dpo
from citing_trl.baselines.preferences import PreferenceArguments
from citing_trl.baselines.ranks import end_ranks
from citing_trl.cli import run_main


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pref_args, base_args, training_args, model_args = TrlParser(
        (PreferenceArguments, BaselineArguments, DPOConfig, ModelConfig)).parse_args_and_config()
    if not pref_args.preferences and base_args.citing_run:
        pref_args.preferences = base_args.citing_run
    run_dpo(pref_args, training_args, model_args, sft_adapter=base_args.sft_adapter)
    if training_args.process_index == 0:
        print(f"DPO adapter saved to {training_args.output_dir}")


if __name__ == "__main__":
    run_main(main)  # a user error (bad flag, missing file, bad pair) prints one line, exit 2
    end_ranks()  # after main returned: no trainer holds the process group any more
