"""PPO-RLHF (this project's PPOTrainer) or RLOO (TRL's RLOOTrainer) from the SFT adapter, against a reward model.

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

from citing_trl.baselines.ppo.config import PPOConfig, PPOError, PPOSamplingArguments, RLHFArguments
from citing_trl.baselines.ppo.launch import run_ppo
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
                sys.exit(f"error: --config {argv[i + 1]!r}: {err.strerror}")
    return "ppo"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    method = chosen_method(argv)
    trainer_config = RLOOConfig if method == "rloo" else PPOConfig
    sampling_view = (PPOSamplingArguments,) if method == "ppo" else ()  # RLOO samples with RLOOConfig's settings
    parser = TrlParser((RLHFArguments, DataArguments, trainer_config, ModelConfig, *sampling_view))
    try:
        rlhf_args, data_args, config, model_args, *sampling_args = parser.parse_args_and_config(argv)
    except (PPOError, ValueError) as err:  # bad flag values: one line naming the flag
        sys.exit(f"error: {err}")
    from citing_trl.data import DataError
    from citing_trl.models import ModelLoadError

    try:
        if rlhf_args.method == "rloo":
            from citing_trl.baselines.rloo import run_rloo

            run_rloo(rlhf_args, data_args, config, model_args)
        else:
            run_ppo(rlhf_args, data_args, config, model_args, sampling=sampling_args[0].build())
    except (PPOError, DataError, ModelLoadError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
