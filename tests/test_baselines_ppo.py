"""PPO-RLHF (citing_trl.baselines.ppo) and the RLOO launch path (citing_trl.baselines.rloo, baselines/ppo_rlhf.py)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from citing_trl.baselines.ppo import (
    KLController,
    PPOConfig,
    PPOError,
    PPOSamplingArguments,
    PPOTrainer,
    compute_gae,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from citing_trl.errors import ConfigError
from tests.conftest import REPO

LAUNCHER = REPO / "baselines" / "ppo_rlhf.py"
CONFIGS = REPO / "baselines" / "configs"
LOG_KEYS = {"score", "kl", "kl_coef", "entropy", "policy_loss", "value_loss", "clipfrac", "approx_kl", "answer_length",
            "step"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny model gains nothing from a second thread, and on a shared 2-core machine two spinning OpenMP
    threads per process made these tests ~8x slower (measured: 277 s vs 35 s for the reward test)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def count_e(prompts, completions):
    """Rule reward for tests: how many 'e' characters the answer has."""
    return [float(c.count("e")) for c in completions]


def lora(r=8, targets=("q_proj", "k_proj", "v_proj", "o_proj")):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=list(targets), task_type="CAUSAL_LM")


def tiny_prompts(n=16):
    return [[{"role": "user", "content": f"Write something about topic {i}."}] for i in range(n)]


@pytest.fixture(scope="module")
def sft_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A non-trivial 'SFT' LoRA adapter on the tiny model (random B, so merging it changes the logits)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("sft") / "adapter"
    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), lora(4, ("q_proj", "v_proj")))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def make_trainer(tiny_model_dir, out, reward_fn=count_e, sft=None, reward_model_path=None, **overrides):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from citing_trl.baselines.ppo import merge_sft_adapter

    settings = dict(output_dir=str(out), max_steps=6, per_device_rollout_batch_size=8, per_device_mini_batch_size=4,
                    sample_max_new_tokens=12, learning_rate=1e-3, sample_temperature=1.0, missing_eos_penalty=None,
                    save_steps=2)
    settings.update(overrides)
    sampling = PPOSamplingArguments(**{k: settings.pop(k) for k in list(settings) if k.startswith("sample_")}).build()
    model = merge_sft_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(sft) if sft else None)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return PPOTrainer(PPOConfig(**settings), model, tok, tiny_prompts(), reward_fn, lora(),
                      reward_model_path=str(reward_model_path) if reward_model_path else None,
                      sft_adapter=str(sft) if sft else None, sampling=sampling)


# ---------------------------------------------------------------------------------------------------------
# The maths against hand computations
# ---------------------------------------------------------------------------------------------------------


def test_gae_matches_hand_computation():
    # row 0: 3 answer tokens; row 1: 2 answer tokens, then padding holding garbage that must be ignored
    rewards = torch.tensor([[0.1, -0.2, 1.0], [0.0, 2.0, 5.0]])
    values = torch.tensor([[1.0, 2.0, 0.5], [0.3, -0.4, 99.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = compute_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0 by hand: d2 = 1 - .5 = .5; d1 = -.2 + .9*.5 - 2 = -1.75; d0 = .1 + .9*2 - 1 = .9
    #   A2 = .5, A1 = -1.75 + .72*.5 = -1.39, A0 = .9 + .72*(-1.39) = -.1008
    # row 1: d1 = 2 + .4 = 2.4; d0 = 0 + .9*(-.4) - .3 = -.66; A1 = 2.4, A0 = -.66 + .72*2.4 = 1.068
    expected = torch.tensor([[-0.1008, -1.39, 0.5], [1.068, 2.4, 0.0]])
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(ret, torch.tensor([[0.8992, 0.61, 1.0], [1.368, 2.0, 0.0]]), atol=1e-6, rtol=0)


def test_kl_penalty_per_token_and_score_at_last_token():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.1, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-1.0, -0.3, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = token_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, -1.0, 0.0], [-0.5, 0.2, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 2.0], [0.05, -0.02 - 1.0, 0.0]]))


def test_whitening_over_answer_tokens_only():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, -50.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    w = masked_whiten(x, mask)
    vals = w[mask.bool()]
    assert abs(float(vals.mean())) < 1e-6 and abs(float(vals.pow(2).mean()) - 1) < 1e-5
    assert float(w[1, 1]) == 0 and float(w[1, 2]) == 0
    torch.testing.assert_close(vals, (torch.tensor([1.0, 2, 3, 4]) - 2.5) / math.sqrt(1.25))


def test_clipped_policy_loss_matches_hand_values():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 9.0]]))
    adv = torch.tensor([[1.0, 1.0, -2.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the 4th token is padding
    loss, stats = policy_loss(new, old, adv, mask, cliprange=0.2)
    # token 1: max(-1.5, -1.2) = -1.2 (clipped); token 2: max(-.5, -.8) = -.5; token 3: max(2.2, 2.2) = 2.2
    assert float(loss) == pytest.approx((-1.2 - 0.5 + 2.2) / 3, abs=1e-6)
    assert float(stats["clipfrac"]) == pytest.approx(1 / 3)
    logs = [math.log(1.5), math.log(0.5), math.log(1.1)]
    assert float(stats["approx_kl"]) == pytest.approx(sum(0.5 * v * v for v in logs) / 3, abs=1e-6)


def test_clipped_value_loss_matches_hand_values():
    old = torch.tensor([[1.0, 1.0, 0.0]])
    new = torch.tensor([[1.5, 0.9, 5.0]])
    returns = torch.tensor([[2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, clipfrac = value_loss(new, old, returns, mask, cliprange_value=0.2)
    # token 1: clip(1.5) = 1.2 -> max(.25, .64) = .64; token 2: within the clip -> .81
    assert float(loss) == pytest.approx(0.5 * (0.64 + 0.81) / 2, abs=1e-6)
    assert float(clipfrac) == pytest.approx(0.5)


def test_adaptive_kl_controller_matches_hand_computation():
    """trlx's AdaptiveKLController / Ziegler et al. 2019: e = clip(KL / target - 1, -0.2, 0.2),
    beta *= 1 + e * n_steps / horizon."""
    ctl = KLController(0.1, target=6.0, horizon=100)
    assert ctl.update(9.0, n_steps=10) == pytest.approx(0.1 * 1.02)  # e = 0.5 clipped to 0.2: x (1 + 0.2 * 10/100)
    assert ctl.update(5.4, n_steps=20) == pytest.approx(0.102 * 0.98)  # e = -0.1 (inside the clip): x (1 - 0.1 * 0.2)
    assert ctl.update(0.0, n_steps=50) == pytest.approx(0.09996 * 0.9)  # e = -1 clipped to -0.2: x (1 - 0.2 * 0.5)
    assert ctl.update(6.0, n_steps=50) == pytest.approx(0.089964)  # on target: unchanged
    fixed = KLController(0.05)  # no target: the default fixed coefficient never moves
    assert not fixed.adaptive and fixed.update(100.0, n_steps=1000) == 0.05


def test_adaptive_kl_is_applied_after_every_rollout_batch_and_logged(tiny_model_dir, tmp_path):
    """The trainer moves beta once per step from that step's rank-averaged KL and the global rollout count, uses the
    new beta for the next rollout's rewards and logs it as kl_coef."""
    trainer = make_trainer(tiny_model_dir, tmp_path / "run", max_steps=4, save_steps=10, learning_rate=3e-2,
                           kl_coef=0.2, kl_target=0.5, kl_horizon=16)
    history = trainer.train()
    beta = 0.2
    for row in history:
        assert row["kl_coef"] == pytest.approx(beta, rel=1e-9)
        assert row["non_score_reward"] == pytest.approx(-beta * row["kl"], rel=1e-5, abs=1e-9)
        beta *= 1 + min(max(row["kl"] / 0.5 - 1, -0.2), 0.2) * 8 / 16  # 8 rollouts per step, one rank
    assert trainer.kl_ctl.value == pytest.approx(beta, rel=1e-9)
    assert len({round(r["kl_coef"], 12) for r in history}) == 4, "the coefficient never moved"
    with pytest.raises(PPOError, match="--kl_target"):
        PPOConfig(output_dir=str(tmp_path / "x"), kl_target=0.0)


@pytest.mark.parametrize("field,value", [("kl_coef", -1.0), ("lam", 1.5), ("per_device_mini_batch_size", 16),
                                         ("missing_eos_penalty", -2.0), ("sample_temperature", 0.0)])
def test_bad_config_values_name_the_field(field, value):
    settings, error = (PPOSamplingArguments, ConfigError) if field.startswith("sample_") else (PPOConfig, PPOError)
    with pytest.raises(error, match=f"--{field}"):
        settings(**{field: value})


# ---------------------------------------------------------------------------------------------------------
# The trainer on the tiny model
# ---------------------------------------------------------------------------------------------------------


def test_reference_is_the_sft_model_with_adapters_disabled(tiny_model_dir, sft_adapter, tmp_path):
    """Reference log-probs come from the same weights with the PPO adapters disabled, and they equal a separately
    loaded SFT model (base + SFT adapter) even after PPO moved the policy away from it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainer = make_trainer(tiny_model_dir, tmp_path / "run", sft=sft_adapter, max_steps=3, save_steps=10)
    trainer.train()
    batch, _ = trainer.rollout(99)
    with torch.no_grad():
        ref = trainer._policy_logits(batch, reference=True)
        policy = trainer._policy_logits(batch)
        sft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(sft_adapter)).eval()
        expected = trainer._gather_answer(sft(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                          batch["starts"], batch["answer_ids"].shape[1])
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
        base_logits = trainer._gather_answer(base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                             batch["starts"], batch["answer_ids"].shape[1])
    m = batch["mask"].bool()
    torch.testing.assert_close(ref[m], expected[m], atol=1e-4, rtol=1e-4)
    assert (policy[m] - ref[m]).abs().max() > 1e-3, "PPO did not move the policy away from the reference"
    assert (base_logits[m] - ref[m]).abs().max() > 1e-3, "the SFT adapter was not merged into the reference"
    # the saved policy is ONE adapter on the base model (SFT adapter folded in) that reproduces the trained policy
    from citing_trl.models import load_model

    trainer.save_model()
    saved, _ = load_model(str(tiny_model_dir), adapter=str(tmp_path / "run" / "base_adapter"))
    with torch.no_grad():
        reloaded = trainer._gather_answer(saved(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                          batch["starts"], batch["answer_ids"].shape[1])
    torch.testing.assert_close(reloaded[m], policy[m], atol=1e-4, rtol=1e-4)
    # one copy of the backbone: the only trainable tensors are LoRA adapters and the value head
    assert all("lora_" in n for n, p in trainer.model.named_parameters() if p.requires_grad)
    # rollout answers that stopped end with EOS, and that EOS is a trained token
    eos = trainer.tokenizer.eos_token_id
    lengths = batch["mask"].sum(1).long()
    for row, n in enumerate(lengths.tolist()):
        if n < trainer.sampling.max_new_tokens:
            assert int(batch["answer_ids"][row, n - 1]) == eos


def _hand_ppo_update(trainer, batch, accumulation: int) -> dict:
    """The PPO epochs as this project ran them before accelerate (plain torch): same minibatch order, two forwards
    of the peft model, loss.backward(), clip_grad_norm_ over the trainable tensors, AdamW.step(); with
    ``accumulation`` > 1 the losses are divided by it and the optimizer steps every ``accumulation`` minibatches."""
    from citing_trl.baselines.ppo import POLICY, VALUE, activate_adapter, logprobs_from_logits
    from citing_trl.baselines.ppo.trainer import gather_answer

    cfg, model = trainer.config, trainer.model
    optimizer = torch.optim.AdamW(trainer.trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed + 31 * trainer.step)
    losses, micro = [], 0
    for _ in range(cfg.num_ppo_epochs):
        order = torch.randperm(batch["input_ids"].shape[0], generator=g)
        for lo in range(0, len(order), cfg.per_device_mini_batch_size):
            mb = {k: v[order[lo : lo + cfg.per_device_mini_batch_size]] for k, v in batch.items()}
            a, t = int(mb["mask"].sum(1).max()), int(mb["attention_mask"].sum(1).max())
            for k in ("answer_ids", "mask", "logprobs", "values", "advantages", "returns"):
                mb[k] = mb[k][:, :a]
            ids, attn = mb["input_ids"][:, :t], mb["attention_mask"][:, :t]
            activate_adapter(model, POLICY)
            logits = gather_answer(model(input_ids=ids, attention_mask=attn).logits, mb["starts"], a)
            pg, _ = policy_loss(logprobs_from_logits(logits, mb["answer_ids"], trainer.sampling.temperature),
                                mb["logprobs"], mb["advantages"], mb["mask"], cfg.cliprange)
            activate_adapter(model, VALUE)
            hidden = model.get_base_model().get_decoder()(input_ids=ids, attention_mask=attn).last_hidden_state
            activate_adapter(model, POLICY)
            vf, _ = value_loss(trainer.value_head(gather_answer(hidden, mb["starts"], a)), mb["values"], mb["returns"],
                               mb["mask"], cfg.cliprange_value)
            (pg + cfg.vf_coef * vf).div(accumulation).backward()
            losses.append((float(pg), float(vf)))
            micro += 1
            if micro % accumulation == 0:
                torch.nn.utils.clip_grad_norm_(trainer.trainable, cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    n = len(losses)
    return {"policy_loss": sum(p for p, _ in losses) / n, "value_loss": sum(v for _, v in losses) / n}


@pytest.mark.parametrize("accumulation", [1, 2])
def test_accelerate_update_equals_the_plain_torch_update(tiny_model_dir, tmp_path, accumulation):
    """One process: one PPO iteration through accelerator.prepare / accumulate / backward / clip_grad_norm_ gives the
    losses and weights of the plain-torch loop (the pre-accelerate trainer), with and without gradient accumulation.
    Measured when this test was written: max |weight difference| 0.0 for accumulation 1."""
    settings = dict(max_steps=1, per_device_mini_batch_size=2, max_grad_norm=0.5, gradient_accumulation_steps=accumulation)
    ours = make_trainer(tiny_model_dir, tmp_path / "ours", **settings)
    theirs = make_trainer(tiny_model_dir, tmp_path / "theirs", **settings)
    before = [p.detach().clone() for p in ours.trainable]
    for a, b in zip(ours.trainable, theirs.trainable):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    batch, _ = ours.rollout(0)
    stats = ours.train_on_rollout(batch)
    batch_theirs, _ = theirs.rollout(0)
    expected = _hand_ppo_update(theirs, batch_theirs, accumulation)
    assert stats["policy_loss"] == pytest.approx(expected["policy_loss"], abs=1e-6)
    assert stats["value_loss"] == pytest.approx(expected["value_loss"], abs=1e-6)
    moved = max(float((p - q).abs().max()) for p, q in zip(ours.trainable, before))
    assert moved > 1e-4, "the update did not change the weights"
    for a, b in zip(ours.trainable, theirs.trainable):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert ours.accelerator.gradient_accumulation_steps == accumulation


def test_rollouts_sample_the_full_temperature_distribution(tiny_model_dir, tmp_path):
    """Log-probs use the full softmax(logits / T), so sampling must not be truncated: transformers would apply
    top_k = 50 by default. 400 first tokens of the near-uniform tiny model (512 tokens) cover far more than 50."""
    from dataclasses import replace

    from citing_trl.generation import generate

    trainer = make_trainer(tiny_model_dir, tmp_path / "run")
    rollout_settings = replace(trainer.rollout_generation_config(0), max_new_tokens=1, batch_size=400, show_progress=False)
    assert rollout_settings.temperature == 1.0 and rollout_settings.top_k == 0 and rollout_settings.top_p == 1.0
    gens = generate(trainer.model, trainer.tokenizer, ["Hello"] * 400, rollout_settings)
    assert len({g.token_ids[0] for g in gens}) > 80
    with pytest.raises(PPOError, match="--sample_top_k"):  # a truncating setting is refused, not trained on
        make_trainer(tiny_model_dir, tmp_path / "run2", sample_top_k=50)


def test_ppo_raises_rule_reward_with_finite_kl(tiny_model_dir, tmp_path):
    # The tiny random model is near-uniform over 512 tokens, so 30 steps give a modest but clear rise (seeded run:
    # first-10-step mean ~2.0 'e' per answer, last-10 ~2.5); sampling with transformers' default top_k=50 instead of
    # the full distribution rose faster but trained on log-probs of a different distribution.
    trainer = make_trainer(tiny_model_dir, tmp_path / "run", max_steps=30, save_steps=100, sample_max_new_tokens=16,
                           learning_rate=1e-2)
    history = trainer.train()
    trainer.save_model()
    assert [r["step"] for r in history] == list(range(1, 31))
    for row in history:
        assert LOG_KEYS <= set(row) and all(math.isfinite(row[k]) for k in LOG_KEYS)
    first = sum(r["score"] for r in history[:10]) / 10
    last = sum(r["score"] for r in history[-10:]) / 10
    assert last > first + 0.3, f"mean reward did not rise: {first:.2f} -> {last:.2f}"
    assert 0 < history[-1]["kl"] < 50
    logged = [json.loads(line) for line in (tmp_path / "run" / "ppo_log.jsonl").read_text().splitlines()]
    assert [r["score"] for r in logged] == [r["score"] for r in history]
    assert (tmp_path / "run" / "reward_curve.png").stat().st_size > 1000
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    if os.environ.get("PPO_CURVE_DIR"):  # keep the figure for a report
        shutil.copy(tmp_path / "run" / "reward_curve.png", Path(os.environ["PPO_CURVE_DIR"]) / "tiny_reward_curve.png")


def test_resume_after_interruption_continues_the_step_count(tiny_model_dir, tmp_path):
    calls = {"n": 0}

    def crashing(prompts, completions):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed during step 5")
        return count_e(prompts, completions)

    adaptive = dict(kl_coef=0.2, kl_target=0.5, kl_horizon=16)  # the KL coefficient is part of the resumed state
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tiny_model_dir, tmp_path / "run", reward_fn=crashing, **adaptive).train()
    assert (tmp_path / "run" / "checkpoint-4" / "state.pt").is_file()
    with (tmp_path / "run" / "ppo_log.jsonl").open("a") as fh:
        fh.write('{"step": 5, "sco')  # a kill in the middle of writing a log line
    resumed = make_trainer(tiny_model_dir, tmp_path / "run", **adaptive)
    resumed.train()
    logged = [json.loads(line) for line in (tmp_path / "run" / "ppo_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]
    # the resumed run is the run that was never interrupted: same rollouts, same scores, same weights
    straight = make_trainer(tiny_model_dir, tmp_path / "straight", **adaptive)
    straight.train()
    reference = [json.loads(line) for line in (tmp_path / "straight" / "ppo_log.jsonl").read_text().splitlines()]
    assert [r["score"] for r in logged] == [r["score"] for r in reference]
    assert [r["kl_coef"] for r in logged] == pytest.approx([r["kl_coef"] for r in reference], rel=1e-12)
    assert resumed.kl_ctl.value == pytest.approx(straight.kl_ctl.value, rel=1e-12) and resumed.kl_ctl.value != 0.2
    for a, b in zip(resumed.trainable, straight.trainable):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_value_model_initialised_from_a_lora_reward_model(tiny_model_dir, tmp_path):
    _lora_reward_model_and_value_init(tiny_model_dir, tmp_path)


def _lora_reward_model_and_value_init(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(3)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    rm = get_peft_model(rm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS"))
    for name, p in rm.named_parameters():
        if "lora_B" in name or "score" in name:
            torch.nn.init.normal_(p, std=0.1)
    rm.save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "rm")
    trainer = make_trainer(tiny_model_dir, tmp_path / "run", reward_model_path=tmp_path / "rm")
    assert trainer.value_initialised_from_rm
    head = next(p for n, p in rm.named_parameters() if "score" in n and "modules_to_save" in n)
    torch.testing.assert_close(trainer.value_head.summary.weight, head.detach())
    rm_b = next(p for n, p in rm.named_parameters() if n.endswith("layers.0.self_attn.q_proj.lora_B.default.weight"))
    value_b = dict(trainer.model.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.lora_B.value.weight"]
    torch.testing.assert_close(value_b, rm_b.detach())
    return tmp_path / "rm"


# ---------------------------------------------------------------------------------------------------------
# The launcher: PPO and RLOO from their YAMLs, bad flags, 2 DDP ranks
# ---------------------------------------------------------------------------------------------------------


def _rule_module(tmp_path: Path) -> Path:
    (tmp_path / "ppo_rules.py").write_text(
        "def count_e(prompts, completions):\n    return [float(c.count('e')) for c in completions]\n"
    )
    return tmp_path


def _tiny_flags(tiny_model_dir, sft_adapter, out):
    return ["--model_name_or_path", str(tiny_model_dir), "--sft_adapter", str(sft_adapter), "--reward_model_path", "",
            "--reward_function", "ppo_rules:count_e", "--output_dir", str(out), "--max_steps", "2"]


@pytest.mark.parametrize("flags,needle", [
    (["--method", "a2c"], "--method"),
    (["--kl_coef", "-0.1"], "--kl_coef"),
    (["--sft_adapter", "/nonexistent/sft"], "--sft_adapter"),
    (["--reward_function", "no_colon"], "--reward_function"),
    (["--reward", "oracle"], "--reward"),
    (["--reward", "gold"], "--reward_function"),  # gold takes no reward function (nor model): contradictory
    (["--reward", "gold", "--reward_function", "", "--reward_model_path", "outputs/rm"], "--reward_model_path"),
    (["--reward_function", ""], "--reward_model_path"),  # --reward model with neither a model nor a function
])
def test_launcher_bad_flag_values_fail_with_one_line(flags, needle, capsys, tmp_path, tiny_model_dir, sft_adapter, monkeypatch):
    sys.path.insert(0, str(REPO / "baselines"))
    try:
        import ppo_rlhf
    finally:
        sys.path.pop(0)
    monkeypatch.syspath_prepend(str(_rule_module(tmp_path)))
    argv = ["--config", str(CONFIGS / "ppo_demo.yaml"), *_tiny_flags(tiny_model_dir, sft_adapter, tmp_path / "o"), *flags]
    with pytest.raises(SystemExit) as exit_info:
        ppo_rlhf.main(argv)
    message = capsys.readouterr().err.strip()  # citing_trl.cli.run_main: one line on stderr, exit status 2
    assert exit_info.value.code == 2
    assert message.startswith("error:") and needle in message and "\n" not in message
    assert not (tmp_path / "o").exists()  # refused before any model was loaded or anything written


def _gold_spec(shared_data: Path, per_source: int = 4) -> str:
    """Real rows of the four QA sources beside the checkout, each with gold answers."""
    files = {"boolq": "boolq_dev.jsonl", "commonsense_qa": "commonsenseqa_dev.jsonl", "nq_open": "nq_open_dev.jsonl",
             "squad_v2": "squad_v2_dev_sample.json"}
    return "+".join(f"{source}:{shared_data / name}@{per_source}" for source, name in files.items())


def test_gold_reward_scores_real_rows_as_is_correct(shared_data):
    """--reward gold: the reward PPO and RLOO get is GoldScorer on the training rows, matched by the very prompts
    the policy answers (training_prompts), and equals is_correct (the gold gate's notion of right)."""
    from citing_trl.baselines.ppo import RLHFArguments, build_reward_fn, training_prompts
    from citing_trl.evaluation.gold import is_correct
    from citing_trl.sft import DataArguments, load_rows

    rows = list(load_rows(DataArguments(dataset=_gold_spec(shared_data), dataset_split="train")))
    assert len({r["source"] for r in rows}) == 4
    reward_fn = build_reward_fn(RLHFArguments(), "gold", rows)
    prompts = training_prompts(rows)
    right = [r["answers"][0] for r in rows]
    others = [rows[(i + 1) % len(rows)]["answers"][0] for i in range(len(rows))]  # another row's answer
    scores = reward_fn(prompts + prompts, right + others)
    expected = [float(is_correct(r["source"], c, r["answers"], r.get("input") or ""))
                for r, c in zip(rows + rows, right + others)]
    assert scores == expected
    assert scores[: len(rows)] == [1.0] * len(rows) and 0.0 in scores[len(rows):]


def test_ppo_launcher_scores_with_the_reward_model(tiny_model_dir, sft_adapter, tmp_path):
    """--reward_model_path goes through RewardScorer (contract C3) and initialises the value model."""
    sys.path.insert(0, str(REPO / "baselines"))
    try:
        import ppo_rlhf
    finally:
        sys.path.pop(0)
    rm = _lora_reward_model_and_value_init(tiny_model_dir, tmp_path)
    out = tmp_path / "ppo_rm"
    ppo_rlhf.main(["--config", str(CONFIGS / "ppo_demo.yaml"), "--model_name_or_path", str(tiny_model_dir),
                   "--sft_adapter", str(sft_adapter), "--reward_model_path", str(rm), "--output_dir", str(out),
                   "--max_steps", "1", "--sample_max_new_tokens", "6"])
    row = json.loads((out / "ppo_log.jsonl").read_text().splitlines()[0])
    assert math.isfinite(row["score"]) and row["score"] != 0
    assert json.loads((out / "train_summary.json").read_text())["value_initialised_from_reward_model"] is True


def test_ppo_launcher_with_gold_reward_takes_a_step(tiny_model_dir, sft_adapter, shared_data, tmp_path):
    """--reward gold without a reward model: the rollouts are scored against the real rows' gold answers (a prompt
    that matched no row would stop the run) and the value model starts fresh."""
    sys.path.insert(0, str(REPO / "baselines"))
    try:
        import ppo_rlhf
    finally:
        sys.path.pop(0)
    out = tmp_path / "ppo_gold"
    ppo_rlhf.main(["--config", str(CONFIGS / "ppo_demo.yaml"), "--model_name_or_path", str(tiny_model_dir),
                   "--sft_adapter", str(sft_adapter), "--reward", "gold", "--reward_model_path", "",
                   "--dataset", _gold_spec(shared_data), "--output_dir", str(out), "--max_steps", "1",
                   "--sample_max_new_tokens", "6", "--per_device_rollout_batch_size", "4",
                   "--per_device_mini_batch_size", "2", "--num_ppo_epochs", "1"])
    row = json.loads((out / "ppo_log.jsonl").read_text().splitlines()[0])
    assert 0.0 <= row["score"] <= 1.0 and math.isfinite(row["policy_loss"])
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["value_initialised_from_reward_model"] is False and summary["steps"] == 1
    info = json.loads((out / "reward.json").read_text())  # what the comparison table labels the row with
    assert info["method"] == "ppo" and info["kind"] == "gold" and info["rows"] > 0


def test_rloo_with_gold_reward_takes_a_step(tiny_model_dir, sft_adapter, shared_data, tmp_path):
    sys.path.insert(0, str(REPO / "baselines"))
    try:
        import ppo_rlhf
    finally:
        sys.path.pop(0)
    out = tmp_path / "rloo_gold"
    ppo_rlhf.main(["--config", str(CONFIGS / "rloo_demo.yaml"), "--model_name_or_path", str(tiny_model_dir),
                   "--sft_adapter", str(sft_adapter), "--reward", "gold", "--reward_model_path", "",
                   "--dataset", _gold_spec(shared_data), "--output_dir", str(out), "--max_steps", "1",
                   "--max_completion_length", "8", "--save_steps", "1"])
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["global_step"] == 1
    logged = state["log_history"][0]
    assert 0.0 <= logged["rewards/GoldScorer/mean"] <= 1.0
    assert (out / "base_adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "reward.json").read_text())["kind"] == "gold"


def test_rloo_launches_from_its_yaml_and_takes_a_step(tiny_model_dir, sft_adapter, tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "baselines"))
    try:
        import ppo_rlhf
    finally:
        sys.path.pop(0)
    monkeypatch.syspath_prepend(str(_rule_module(tmp_path)))
    out = tmp_path / "rloo"
    ppo_rlhf.main(["--config", str(CONFIGS / "rloo_demo.yaml"), *_tiny_flags(tiny_model_dir, sft_adapter, out),
                   "--max_steps", "1", "--max_completion_length", "8", "--save_steps", "1"])
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["global_step"] == 1
    logged = state["log_history"][0]
    assert "rewards/count_e/mean" in logged and math.isfinite(logged["rewards/count_e/mean"])
    assert json.loads((out / "reward.json").read_text())["reward_function"] == "ppo_rules:count_e"
    assert (out / "adapter_config.json").is_file()
    from citing_trl.models import load_model

    combined, _ = load_model(str(tiny_model_dir), adapter=str(out / "base_adapter"))  # SFT + RLOO as one adapter
    assert combined.peft_config["default"].r == 4 + 16  # SFT rank + rloo_demo.yaml's lora_r


@pytest.mark.slow
def test_ppo_launcher_two_ddp_ranks_agree_on_weights(tiny_model_dir, sft_adapter, tmp_path):
    """accelerate_configs/cpu_2proc.yaml: two gloo ranks sample different prompts; accelerate's DDP (no hand-made
    sync left) averages their gradients, and they end with identical weights."""
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{_rule_module(tmp_path)}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "accelerate_configs" / "cpu_2proc.yaml"), str(LAUNCHER), "--config", str(CONFIGS / "ppo_demo.yaml"),
           *_tiny_flags(tiny_model_dir, sft_adapter, out), "--max_steps", "3", "--sample_max_new_tokens", "8",
           "--per_device_rollout_batch_size", "4", "--per_device_mini_batch_size", "2", "--learning_rate", "1e-3"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    digests = summary["weights_digest_per_rank"]
    assert len(digests) == 2 and digests[0] == pytest.approx(digests[1], rel=1e-9, abs=0)
    assert summary["steps"] == 3
    assert summary["num_processes"] == 2 and "MULTI_CPU" in summary["distributed_type"]  # prepared as DDP
    rows = [json.loads(line) for line in (out / "ppo_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


@pytest.mark.slow
def test_smollm2_ppo_smoke(smollm2_dir, tmp_path):
    """A few PPO steps on the real SmolLM2-135M-Instruct through the launcher, with a rule reward
    (answers near 20 words): finite logs, an adapter on disk."""
    (tmp_path / "smol_rules.py").write_text(
        "def near_20_words(prompts, completions):\n"
        "    return [-abs(len(c.split()) - 20) / 10.0 for c in completions]\n"
    )
    out = tmp_path / "smol"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    cmd = [sys.executable, str(LAUNCHER), "--config", str(CONFIGS / "ppo_demo.yaml"), "--model_name_or_path",
           str(smollm2_dir), "--sft_adapter", "", "--reward_model_path", "", "--reward_function",
           "smol_rules:near_20_words", "--output_dir", str(out), "--max_steps", "3", "--sample_max_new_tokens", "32",
           "--per_device_rollout_batch_size", "4", "--per_device_mini_batch_size", "2", "--num_ppo_epochs", "2"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "ppo_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert all(math.isfinite(row[k]) for k in LOG_KEYS)
        assert row["entropy"] > 0 and row["answer_length"] > 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    if os.environ.get("PPO_CURVE_DIR"):
        shutil.copy(out / "ppo_log.jsonl", Path(os.environ["PPO_CURVE_DIR"]) / "smollm2_ppo_log.jsonl")


@pytest.mark.parametrize("name", ["ppo_demo", "ppo_llama7b", "rloo_demo", "rloo_llama7b"])
def test_ppo_rloo_yamls_parse_with_the_launcher(name, sft_adapter, tmp_path):
    """Every PPO/RLOO YAML parses with the dataclasses the launcher picks for its method."""
    sys.path.insert(0, str(REPO / "baselines"))
    try:
        import ppo_rlhf
    finally:
        sys.path.pop(0)
    from trl import ModelConfig, RLOOConfig, TrlParser

    from citing_trl.sft import DataArguments

    path = CONFIGS / f"{name}.yaml"
    argv = ["--config", str(path), "--sft_adapter", str(sft_adapter), "--reward_model_path", str(tmp_path),
            "--output_dir", str(tmp_path / "o")]
    method = ppo_rlhf.chosen_method(argv)
    assert method == name.split("_")[0]
    if method == "rloo" and "llama7b" in name:
        argv += ["--use_cpu", "true", "--bf16", "false"]  # no GPU here
    config_class = RLOOConfig if method == "rloo" else PPOConfig
    sampling_view = (PPOSamplingArguments,) if method == "ppo" else ()
    rlhf, reward, data, config, model, *sampling = TrlParser(
        (ppo_rlhf.RLHFArguments, ppo_rlhf.RewardArguments, DataArguments, config_class, ModelConfig, *sampling_view)
    ).parse_args_and_config(argv)
    assert rlhf.method == method and model.lora_r == 16 and reward.reward == "model"
    if method == "ppo":
        assert config.kl_target is None and config.kl_coef == 0.05  # fixed beta unless kl_target is set
    text = path.read_text()
    assert "sft_adapter:" in text and text.count("reward_model_path:") == 1  # starts from SFT, scored by the RM
    if "llama7b" in name:
        assert (sampling[0].sample_max_new_tokens if method == "ppo" else config.max_completion_length) == 512
    else:
        assert "HuggingFaceTB/SmolLM2-135M-Instruct" in text


@pytest.mark.slow
def test_killed_ppo_run_resumes_from_its_last_checkpoint(tiny_model_dir, sft_adapter, tmp_path):
    """kill -9 during training, rerun the same command: it continues from the newest checkpoint to max_steps."""
    import signal
    import time

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{_rule_module(tmp_path)}", "OMP_NUM_THREADS": "1"}

    def command(max_steps: int) -> list[str]:
        return [sys.executable, str(LAUNCHER), "--config", str(CONFIGS / "ppo_demo.yaml"),
                *_tiny_flags(tiny_model_dir, sft_adapter, out), "--max_steps", str(max_steps), "--save_steps", "2",
                "--sample_max_new_tokens", "8", "--per_device_rollout_batch_size", "4", "--per_device_mini_batch_size", "2"]

    proc = subprocess.Popen(command(40), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint-4" / "state.pt").is_file():
        time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint-4").is_dir() and not (out / "train_summary.json").exists()
    killed_at = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    rerun = subprocess.run(command(killed_at + 2), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from {out / f'checkpoint-{killed_at}'} at step {killed_at}" in rerun.stderr
    rows = [json.loads(line) for line in (out / "ppo_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, killed_at + 3))
    assert json.loads((out / "train_summary.json").read_text())["steps"] == killed_at + 2
