"""Every recipe YAML parses with the recipe's own TrlParser (unknown or renamed fields fail here, not on a GPU)."""

from pathlib import Path

import pytest
from trl import ModelConfig, SFTConfig, TrlParser

from citing_trl.citing_config import CitingArguments, CitingConfig, RolloutArguments, TeacherArguments
from citing_trl.sft import DataArguments
from tests.conftest import REPO

CONFIGS = sorted((REPO / "recipes" / "configs").glob("*.yaml"))
# GPU settings (bf16) cannot be validated on a CPU machine; override them to parse the rest of the file.
CPU = ["--bf16", "false", "--use_cpu", "true", "--gradient_checkpointing", "false"]


def parser_for(path: Path) -> TrlParser:
    if path.name.startswith("citing"):
        return TrlParser((DataArguments, CitingConfig, ModelConfig, CitingArguments, TeacherArguments, RolloutArguments))
    return TrlParser((DataArguments, SFTConfig, ModelConfig))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses(path):
    parsed = parser_for(path).parse_args_and_config(args=["--config", str(path), *CPU])
    data_args, training_args, model_args = parsed[:3]
    assert model_args.use_peft is True, "every recipe trains LoRA adapters"
    # SFT trains at the paper's 512 tokens; a CITING prompt carries a whole draft answer plus criteria
    assert training_args.max_length == (512 if path.name.startswith("sft") else training_args.max_length)
    if path.name.startswith("citing"):
        assert training_args.max_length >= 1024
    if "llama7b" in path.name:  # the paper's setting, §4.2
        assert training_args.num_train_epochs == 4 and training_args.learning_rate == 1e-5
    if path.name.startswith("citing"):
        citing, teacher, rollout = parsed[3], parsed[4].build(), parsed[5].build()
        assert citing.num_rounds >= 1 and teacher.backend in {"local", "openai"}
        if "llama7b" in path.name:
            assert citing.num_instructions == 1000 and rollout.max_new_tokens == 512


def test_demo_configs_run_offline_by_default():
    for name in ("sft_demo.yaml", "citing_demo.yaml"):
        text = (REPO / "recipes" / "configs" / name).read_text()
        assert "use_cpu: true" in text and "dataset: demo" in text
    assert "teacher_backend: local" in (REPO / "recipes" / "configs" / "citing_demo.yaml").read_text()


def test_plain_chat_template_for_base_models(tiny_model_dir):
    """The template given to base models (no chat template of their own): prompt is a prefix of
    prompt+answer, and an answer ends with EOS so the student learns to stop."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = (REPO / "recipes" / "configs" / "templates" / "plain_chat.jinja").read_text()
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    head = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(prompt + [{"role": "assistant", "content": "Paris."}], tokenize=False)
    assert full.startswith(head)
    assert full[len(head):].startswith("Paris.") and full.rstrip().endswith(tok.eos_token)
    assert "User:\nCapital of France?" in head and head.endswith("Assistant:\n")
