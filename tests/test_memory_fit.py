"""Training memory that fits the model: gradient checkpointing on in the shipped demo/compare configs and really
used by the trainer (same gradients as without it), RRHF's log-probs through the fused LM head (no (N, T, V)
logits; equal to the full log-softmax), and bf16 kept only on a CPU with bf16 instructions."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

from citing_trl import precision
from citing_trl.citing_config import CitingConfig
from tests.conftest import REPO

# every training config `make demo` and `make compare` run (compare_qa.yaml names them; PPO has its own loop)
MEMORY_CONFIGS = ["recipes/configs/citing_demo.yaml", "recipes/configs/citing_qa_demo.yaml",
                  "baselines/configs/reward_model_demo.yaml", "baselines/configs/rrhf_demo.yaml",
                  "baselines/configs/raft_demo.yaml", "baselines/configs/dpo_demo.yaml",
                  "baselines/configs/sft_more_demo.yaml"]


def test_compare_uses_the_configs_checked_here():
    compare = yaml.safe_load((REPO / "baselines/configs/compare_qa.yaml").read_text())
    used = {compare[k] for k in compare if k.endswith("_config") and k != "infer_config"} - {compare["ppo_config"]}
    assert used <= set(MEMORY_CONFIGS)


@pytest.mark.parametrize("path", MEMORY_CONFIGS)
def test_shipped_configs_checkpoint_gradients_and_ask_for_bf16(path):
    config = yaml.safe_load((REPO / path).read_text())
    assert config["gradient_checkpointing"] is True
    assert config["bf16"] is True  # kept on a CPU with bf16 instructions only (citing_trl/precision.py)


def test_demo_config_parses_to_checkpointing_and_native_bf16_only():
    from trl import ModelConfig, TrlParser

    from citing_trl.citing_config import CitingArguments, RolloutArguments, TeacherArguments
    from citing_trl.sft import DataArguments

    parser = TrlParser((DataArguments, CitingConfig, ModelConfig, CitingArguments, TeacherArguments, RolloutArguments))
    training = parser.parse_args_and_config(args=["--config", str(REPO / "recipes/configs/citing_demo.yaml")])[1]
    assert training.gradient_checkpointing is True
    assert training.bf16 is precision.cpu_has_native_bf16()


X86_WITH = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n"
X86_WITHOUT = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n"
ARM_WITH = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


def test_cpu_bf16_is_detected_from_the_flags():
    assert precision.cpu_has_native_bf16(X86_WITH) and precision.cpu_has_native_bf16(ARM_WITH)
    assert not precision.cpu_has_native_bf16(X86_WITHOUT) and not precision.cpu_has_native_bf16("")


def test_bf16_falls_back_to_fp32_with_one_line_on_a_cpu_without_it(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None: False)
    with caplog.at_level(logging.WARNING, logger="citing_trl.precision"):
        args = CitingConfig(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to="none")
    assert args.bf16 is False and args.mixed_precision == "no"
    lines = [r for r in caplog.records if r.name == "citing_trl.precision"]
    assert len(lines) == 1 and "float32" in lines[0].getMessage() and "\n" not in lines[0].getMessage()

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    caplog.clear()
    args = CitingConfig(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to="none")
    assert args.bf16 is True and args.mixed_precision == "bf16"
    assert not [r for r in caplog.records if r.name == "citing_trl.precision"]


def lora_grads(tmp_path, tiny_model_dir, checkpointing: bool):
    """One optimizer step of CitingTrainer.train() (the trainer switches checkpointing on in train()); returns the
    model, the step's loss and the LoRA gradients just before the optimizer uses them."""
    from transformers import TrainerCallback

    from tests.test_citing_trainer import make_trainer

    grads = {}

    class Grab(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            grads.update({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})

    trainer = make_trainer(tmp_path / str(checkpointing), tiny_model_dir, gradient_checkpointing=checkpointing,
                           max_steps=1, per_device_train_batch_size=4, seed=3)
    trainer.add_callback(Grab())
    trainer.train()
    return trainer.model, trainer.state.log_history[0]["loss"], grads


def test_gradient_checkpointing_with_lora_really_checkpoints_and_keeps_the_gradients(tmp_path, tiny_model_dir):
    from torch.utils import checkpoint

    calls = []
    real = checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real(*args, **kwargs)

    plain_model, plain_loss, plain = lora_grads(tmp_path, tiny_model_dir, False)
    assert not calls
    import transformers.modeling_utils as mu

    original = mu.checkpoint
    mu.checkpoint = counting
    try:
        model, loss, grads = lora_grads(tmp_path, tiny_model_dir, True)
    finally:
        mu.checkpoint = original
    assert model.is_gradient_checkpointing and calls and set(calls) == {False}  # non-reentrant, once per layer
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    assert grads.keys() == plain.keys() and any(g.abs().sum() > 0 for g in grads.values())
    for name, g in grads.items():
        torch.testing.assert_close(g, plain[name], rtol=1e-5, atol=1e-7)


def test_rrhf_fused_log_probs_equal_the_full_log_softmax(tiny_model_dir, tmp_path):
    from citing_trl.baselines.rrhf import RRHFCollator, RRHFConfig, RRHFTrainer, token_logps
    from citing_trl.models import load_model
    from tests.test_baselines_rrhf import FEATURES

    model, tokenizer = load_model(str(tiny_model_dir), dtype="float32")
    RRHFTrainer(model, RRHFConfig(output_dir=str(tmp_path), use_cpu=True), train_dataset=FEATURES,
                processing_class=tokenizer)  # adds the fused LM head
    batch = RRHFCollator(tokenizer, 512)(FEATURES)
    ids, attn, resp = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    fused, mask = token_logps(model, ids, attn, resp)
    fused_grad = torch.autograd.grad(fused.sum(), [p for p in model.parameters() if p.requires_grad][:3])

    logits = model(input_ids=ids, attention_mask=attn).logits  # the full computation the fused head replaces
    full = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    full_mask = resp[:, 1:].float()
    assert torch.equal(mask, full_mask) and mask.sum() > 0
    torch.testing.assert_close(fused, full * full_mask, rtol=1e-5, atol=1e-5)
    full_grad = torch.autograd.grad((full * full_mask).sum(), [p for p in model.parameters() if p.requires_grad][:3])
    for a, b in zip(fused_grad, full_grad):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
