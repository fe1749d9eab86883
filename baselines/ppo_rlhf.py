"""PPO-RLHF (this project's PPOTrainer) or RLOO (TRL's RLOOTrainer) from the SFT adapter, against a reward model
(`--reward model`, the default) or the verifiable gold reward (`--reward gold --reward_model_path ''`).

    accelerate launch baselines/ppo_rlhf.py --config baselines/configs/ppo_demo.yaml
    accelerate launch baselines/ppo_rlhf.py --config baselines/configs/rloo_demo.yaml      # or --method rloo
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml baselines/ppo_rlhf.py \
        --config baselines/configs/ppo_llama7b.yaml

`--method` picks which trainer's settings are parsed (PPOConfig + the `--sample_*` rollout settings, or
trl.RLOOConfig); every flag overrides the YAML.
"""

import logging
import sys

import yaml
from trl import ModelConfig, RLOOConfig, TrlParser

from citing_trl.baselines.common import RewardArguments
from citing_trl.baselines.ppo.config import PPOConfig, PPOSamplingArguments, RLHFArguments
from citing_trl.baselines.ppo.launch import run_ppo
from citing_trl.baselines.ranks import end_ranks
from citing_trl.baselines.rloo import run_rloo
from citing_trl.cli import run_main
from citing_trl.errors import ConfigError
from citing_trl.sft import DataArguments


def chosen_method(argv: list[str]) -> str:
    """--method from the command line, else from the --config YAML, else 'ppo'."""
    for i, arg in enumerate(argv):
        if arg == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--method="):
            return arg.split("=", 1)[1]
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            try:
                with open(argv[i + 1]) as f:
                    return (yaml.safe_load(f) or {}).get("method", "ppo")
            except OSError as err:
                raise ConfigError(f"--config {argv[i + 1]!r}: {err.strerror}", flag="config") from None
    return "ppo"


def train(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    method = chosen_method(argv)
    if method == "rloo":
        parser = TrlParser((RLHFArguments, RewardArguments, DataArguments, RLOOConfig, ModelConfig))  # RLOOConfig samples
        rlhf_args, reward_args, data_args, config, model_args = parser.parse_args_and_config(argv)
        run_rloo(rlhf_args, data_args, config, model_args, reward=reward_args.reward)
    else:
        parser = TrlParser((RLHFArguments, RewardArguments, DataArguments, PPOConfig, ModelConfig, PPOSamplingArguments))
        rlhf_args, reward_args, data_args, config, model_args, sampling_args = parser.parse_args_and_config(argv)
        run_ppo(rlhf_args, data_args, config, model_args, sampling=sampling_args.build(), reward=reward_args.reward)


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` (default: the command line) and train; a user error prints one line and exits 2."""
    run_main(lambda: train(sys.argv[1:] if argv is None else argv))
    end_ranks()  # after train returned: no trainer holds the process group any more


if __name__ == "__main__":
    main()
