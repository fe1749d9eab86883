"""Supervised fine-tuning of the student with LoRA (CITING Algorithm 1, lines 2-4).

    accelerate launch recipes/sft.py --config recipes/configs/sft_demo.yaml
"""

from trl import ModelConfig, SFTConfig, TrlParser

from citing_trl.cli import run_main
from citing_trl.sft import DataArguments, run_sft


def main():
    parser = TrlParser((DataArguments, SFTConfig, ModelConfig))
    data_args, training_args, model_args = parser.parse_args_and_config()
    run_sft(data_args, training_args, model_args)


if __name__ == "__main__":
    run_main(main)  # a user error (bad flag, missing file, bad row) prints one line, exit 2
