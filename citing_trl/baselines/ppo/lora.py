"""The LoRA algebra of PPO: one backbone plays policy, value model and reference.

* The SFT adapter is folded into the backbone (:func:`merge_sft_adapter`), so "adapters disabled" is the SFT
  policy: that is the **reference** (``model.disable_adapter()``), with no second copy of the weights.
* The **policy** is the LoRA adapter ``default`` (:data:`POLICY`), the **value model** the adapter ``value``
  (:data:`VALUE`) plus a scalar head. :func:`add_policy_and_value_adapters` creates both; when the reward model
  is a LoRA adapter of the same backbone its LoRA weights initialise the value adapter and its ``score`` head
  is handed back for the value head.
* :func:`activate_adapter` switches the adapter a forward uses while both stay trainable.
* For export, :func:`combine_lora_adapters` writes the SFT adapter and the RL adapter as ONE exact LoRA adapter
  on the base model (:func:`save_policy_adapter`), which every loader of this project understands.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from safetensors.torch import load_file, save_file

from citing_trl.baselines.ppo.config import PPOError

logger = logging.getLogger(__name__)

POLICY, VALUE = "default", "value"


def merge_sft_adapter(model, sft_adapter: str | None):
    """Fold the SFT adapter into the backbone so that 'adapters disabled' means the SFT policy."""
    if not sft_adapter:
        return model
    if not (Path(sft_adapter) / "adapter_config.json").is_file():
        raise PPOError(f"--sft_adapter {sft_adapter!r} is not a LoRA adapter folder (no adapter_config.json)")
    return PeftModel.from_pretrained(model, sft_adapter).merge_and_unload()


def reward_adapter_state(path: str | None) -> tuple[dict, dict | None, torch.Tensor | None]:
    """From a reward model saved as a LoRA adapter: (its LoRA config dict, its LoRA tensors, its score head)."""
    if not path or not (Path(path) / "adapter_config.json").is_file():
        return {}, None, None
    cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    weights = Path(path) / "adapter_model.safetensors"
    if not weights.is_file():
        return cfg, None, None
    state = load_file(str(weights))
    lora = {k: v for k, v in state.items() if "lora_" in k}
    head = next((v for k, v in state.items() if k.endswith("score.weight") or k.endswith("score.modules_to_save.weight")), None)
    return cfg, lora, head


def add_policy_and_value_adapters(model, peft_config, reward_model_path: str | None = None):
    """Wrap the (SFT-merged) ``model`` with the policy adapter :data:`POLICY` from ``peft_config`` and add the value
    adapter :data:`VALUE`. When ``reward_model_path`` is a LoRA reward model of the same backbone, the value adapter
    takes its rank and LoRA weights. Returns ``(peft model, score head)``: the reward model's score head when it
    fits the backbone (to initialise the value head), else None. Random draws (LoRA inits) happen in this order:
    policy adapter, value adapter."""
    peft_model = get_peft_model(model, peft_config, adapter_name=POLICY)
    rm_cfg, rm_lora, rm_head = reward_adapter_state(reward_model_path)
    value_cfg = peft_config
    if rm_lora:
        value_cfg = LoraConfig(r=rm_cfg["r"], lora_alpha=rm_cfg["lora_alpha"], lora_dropout=0.0,
                               target_modules=rm_cfg["target_modules"], task_type="CAUSAL_LM")
    peft_model.add_adapter(VALUE, copy.deepcopy(value_cfg))
    if not rm_lora:
        return peft_model, None
    hidden = peft_model.get_base_model().config.hidden_size
    result = set_peft_model_state_dict(peft_model, rm_lora, adapter_name=VALUE)
    unexpected = getattr(result, "unexpected_keys", []) or []
    if rm_head is not None and rm_head.shape[-1] == hidden and not unexpected:
        return peft_model, rm_head
    logger.warning("reward model at %s did not fit the value model; value adapter/head stay fresh", reward_model_path)
    return peft_model, None


def activate_adapter(model, adapter: str) -> None:
    """Switch the active adapter; peft then freezes the other one, so every LoRA tensor is re-marked trainable
    (a minibatch uses both adapters before one backward)."""
    model.set_adapter(adapter)
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.requires_grad_(True)


def _lora_scale(cfg: dict) -> float:
    return cfg["lora_alpha"] / (math.sqrt(cfg["r"]) if cfg.get("use_rslora") else cfg["r"])


def _plain_lora(cfg: dict) -> bool:
    return not (cfg.get("rank_pattern") or cfg.get("alpha_pattern") or cfg.get("use_dora") or cfg.get("modules_to_save")
                or cfg.get("lora_bias") or cfg.get("bias", "none") != "none")


def combine_lora_adapters(first: tuple[dict, dict], second: tuple[dict, dict], out_dir: str | Path,
                          base_model_name_or_path: str | None = None) -> Path:
    """Write ONE LoRA adapter equal to applying ``first`` then ``second`` (each ``(config dict, state dict)`` with
    peft's saved key names): for every module, A = [A1; A2] and B = [s1 B1, s2 B2] with rank r1 + r2 and scale 1,
    so B A = s1 B1 A1 + s2 B2 A2 exactly. Used to fold the SFT adapter and the RL adapter into one adapter on the
    base model, which every loader of this project (``load_model(base, adapter=...)``) understands."""
    (cfg1, sd1), (cfg2, sd2) = first, second
    if not (_plain_lora(cfg1) and _plain_lora(cfg2)):
        raise PPOError("only plain LoRA adapters (no DoRA, rank/alpha patterns, biases or modules_to_save) can be combined")
    s1, s2, r1, r2 = _lora_scale(cfg1), _lora_scale(cfg2), cfg1["r"], cfg2["r"]
    rank = r1 + r2
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in list(sd1) + list(sd2) if ".lora_" in k})
    state = {}
    for mod in modules:
        a1, b1 = sd1.get(f"{mod}.lora_A.weight"), sd1.get(f"{mod}.lora_B.weight")
        a2, b2 = sd2.get(f"{mod}.lora_A.weight"), sd2.get(f"{mod}.lora_B.weight")
        ref_a, ref_b = (a1, b1) if a1 is not None else (a2, b2)
        a1 = a1 if a1 is not None else ref_a.new_zeros(r1, ref_a.shape[1])
        b1 = b1 if b1 is not None else ref_b.new_zeros(ref_b.shape[0], r1)
        a2 = a2 if a2 is not None else ref_a.new_zeros(r2, ref_a.shape[1])
        b2 = b2 if b2 is not None else ref_b.new_zeros(ref_b.shape[0], r2)
        state[f"{mod}.lora_A.weight"] = torch.cat([a1.float(), a2.float()], 0).contiguous()
        state[f"{mod}.lora_B.weight"] = torch.cat([s1 * b1.float(), s2 * b2.float()], 1).contiguous()
    targets = sorted({m.rsplit(".", 1)[-1] for m in modules})
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM",
                        base_model_name_or_path=base_model_name_or_path or cfg1.get("base_model_name_or_path"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out_dir)
    save_file(state, str(out_dir / "adapter_model.safetensors"))
    return out_dir


def save_policy_adapter(model, adapter_name: str, sft_adapter: str | None, out_dir: str | Path, tokenizer=None) -> Path:
    """Save the trained policy as one LoRA adapter on the base model: the RL adapter alone when training started
    from the base model, else the SFT adapter and the RL adapter combined (:func:`combine_lora_adapters`)."""
    out_dir = Path(out_dir)
    if not sft_adapter:
        model.save_pretrained(out_dir, selected_adapters=[adapter_name])
    else:
        sft_cfg = json.loads((Path(sft_adapter) / "adapter_config.json").read_text())
        sft_sd = load_file(str(Path(sft_adapter) / "adapter_model.safetensors"))
        rl_cfg = model.peft_config[adapter_name].to_dict()
        rl_sd = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model, adapter_name=adapter_name).items()}
        combine_lora_adapters((sft_cfg, sft_sd), (rl_cfg, rl_sd), out_dir, sft_cfg.get("base_model_name_or_path"))
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir
