"""The vLLM generation backend through a fake `vllm` package, for fast unit tests (the real engine runs in
tests/test_vllm_real.py, marked slow). The fake stands in for `vllm.LLM`, `SamplingParams`, `LoRARequest` and
the platform, so our engine wrapper and generate()'s vllm path run: input order, finish reasons, token counts,
the LoRA request, sleep/wake around training on a GPU-like platform, merged weights on a CPU-like one."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from citing_trl import generation
from citing_trl.generation import DecodingConfig, Generation, VLLMEngine, generate


class FakeOutput:
    def __init__(self, token_ids, finish_reason):
        self.token_ids = token_ids
        self.finish_reason = finish_reason


class FakeRequestOutput:
    def __init__(self, request_id, prompt_token_ids, token_ids, finish_reason):
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.outputs = [FakeOutput(token_ids, finish_reason)]


class FakeLLM:
    """Answers prompt i with tokens derived from the prompt; even-length prompts stop with EOS (kept in
    token_ids, as vLLM does), odd ones run to max_tokens. Outputs come back in reverse order."""

    instances: list = []

    def __init__(self, model, **kwargs):
        self.model = model
        self.kwargs = kwargs
        self.calls: list[dict] = []
        self.events: list[str] = []
        self.counter = 0
        FakeLLM.instances.append(self)

    def generate(self, prompts, sampling_params, lora_request=None, use_tqdm=True):
        self.events.append("generate")
        self.calls.append({"prompts": prompts, "params": sampling_params, "lora": lora_request})
        outs = []
        for prompt, params in zip(prompts, sampling_params):
            ids = prompt["prompt_token_ids"]
            eos = params.stop_token_ids[0]
            if len(ids) % 2 == 0:
                tokens, reason = [ids[-1], ids[0], eos], "stop"
            else:
                tokens, reason = [(ids[0] + k) % 300 + 10 for k in range(params.max_tokens)], "length"
            outs.append(FakeRequestOutput(str(self.counter), ids, tokens, reason))
            self.counter += 1
        return list(reversed(outs))

    def sleep(self, level=1):
        self.events.append(f"sleep{level}")

    def collective_rpc(self, method, kwargs=None):
        self.events.append(method)
        self.reloaded = [kwargs["weights_path"], sorted(p.name for p in Path(kwargs["weights_path"]).iterdir())]

    def reset_prefix_cache(self):
        self.events.append("reset_prefix_cache")

    def wake_up(self, tags=None):
        self.events.append("wake_up")


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class FakeLoRARequest:
    def __init__(self, lora_name, lora_int_id, lora_path):
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path
        self.files = sorted(p.name for p in Path(lora_path).iterdir())  # the adapter must exist while in use


class FakePlatform:
    cpu = False

    def is_cpu(self):
        return self.cpu

    def is_sleep_mode_available(self):
        return not self.cpu


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = FakePlatform()
    FakeLLM.platform = platforms.current_platform
    for name, mod in {"vllm": vllm, "vllm.lora": lora, "vllm.lora.request": request,
                      "vllm.platforms": platforms}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(generation, "_ENGINES", {})
    FakeLLM.instances.clear()
    return FakeLLM


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from citing_trl.models import load_model

    return load_model(str(tiny_model_dir))


def prompts() -> list:
    return [[{"role": "user", "content": "a" * n}] for n in (1, 7, 2, 30, 4)] + ["plain text prompt"]


def test_vllm_backend_order_finish_reasons_token_counts(fake_vllm, tiny, tiny_model_dir):
    model, tokenizer = tiny
    config = DecodingConfig(backend="vllm", max_new_tokens=5, batch_size=2, show_progress=False)
    seen = []
    out = generate(model, tokenizer, prompts(), config, on_batch=lambda idx, gens: seen.append((idx, gens)))
    (llm,) = fake_vllm.instances
    assert llm.model == str(tiny_model_dir) and llm.kwargs["enable_lora"] and llm.kwargs["enable_sleep_mode"]
    (call,) = llm.calls
    sent = [p["prompt_token_ids"] for p in call["prompts"]]
    eos = tokenizer.eos_token_id
    assert call["lora"] is None  # a plain model: no adapter
    assert all(p.temperature == 0.0 and p.seed is None and eos in p.stop_token_ids for p in call["params"])
    assert all(isinstance(g, Generation) for g in out) and len(out) == len(prompts())
    for ids, gen in zip(sent, out):  # input order although the engine answered in reverse
        assert gen.prompt_tokens == len(ids)
        if len(ids) % 2 == 0:
            assert gen.finish_reason == "stop" and gen.completion_tokens == 2  # EOS not counted
            assert gen.token_ids == [ids[-1], ids[0], eos]  # the sampled tokens, EOS included (RL trainers)
            assert gen.text == tokenizer.decode([ids[-1], ids[0]], skip_special_tokens=True).strip()
        else:
            assert gen.finish_reason == "length" and gen.completion_tokens == 5 and len(gen.token_ids) == 5
    assert {len(ids) % 2 for ids in sent} == {0, 1}  # both kinds were exercised
    assert seen == [(list(range(len(out))), out)]
    assert llm.events == ["generate", "sleep1"]  # the GPU is handed back after generating

    # a second call wakes the same engine up first (no second engine, no reload)
    sampled = generate(model, tokenizer, prompts()[:2], DecodingConfig(backend="vllm", do_sample=True, seed=7,
                                                                           temperature=0.9, show_progress=False))
    assert len(fake_vllm.instances) == 1 and llm.events == ["generate", "sleep1", "wake_up", "generate", "sleep1"]
    assert [p.seed for p in llm.calls[1]["params"]] == [7, 8] and llm.calls[1]["params"][0].temperature == 0.9
    assert len(sampled) == 2


def test_vllm_backend_serves_the_adapter_as_a_lora_request(fake_vllm, tiny, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    try:
        config = DecodingConfig(backend="vllm", max_new_tokens=3, show_progress=False)
        out = generate(peft_model, tokenizer, prompts()[:3], config)
        (llm,) = fake_vllm.instances
        lora = llm.calls[0]["lora"]
        assert llm.model == str(tiny_model_dir)  # the engine holds the base weights, unmerged
        assert lora.lora_int_id == 1 and "adapter_config.json" in lora.files
        assert not Path(lora.lora_path).exists()  # the temporary adapter copy is cleaned up afterwards
        assert len(out) == 3
        # an adapter already on disk is passed as it is, and keeps a stable LoRA id per folder
        generate(peft_model, tokenizer, prompts()[:1], DecodingConfig(backend="vllm", lora_path=str(lora_dir := Path(
            tiny_model_dir)), show_progress=False))
        generate(peft_model, tokenizer, prompts()[:1], DecodingConfig(backend="vllm", lora_path=str(lora_dir),
                                                                        show_progress=False))
        assert [c["lora"].lora_path for c in llm.calls[1:]] == [str(lora_dir)] * 2
        assert [c["lora"].lora_int_id for c in llm.calls[1:]] == [2, 2]
    finally:
        peft_model.unload()


def test_transformers_and_vllm_give_the_same_fields(fake_vllm, tiny):
    model, tokenizer = tiny
    hf = generate(model, tokenizer, prompts()[:2], DecodingConfig(max_new_tokens=3, show_progress=False))
    vl = generate(model, tokenizer, prompts()[:2], DecodingConfig(backend="vllm", max_new_tokens=3,
                                                                     show_progress=False))
    assert [g.prompt_tokens for g in hf] == [g.prompt_tokens for g in vl]
    assert {type(g) for g in hf + vl} == {Generation}


def test_backend_flag_and_missing_extra(monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        DecodingConfig(backend="tgi")
    with pytest.raises(ValueError, match="answer-only controls"):
        DecodingConfig(backend="vllm", repetition_penalty=1.2)
    monkeypatch.setenv("CITING_GENERATION_BACKEND", "vllm")
    assert DecodingConfig().backend == "vllm"
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    with pytest.raises(ImportError, match=r"citing-trl\[vllm"):
        VLLMEngine("some/model")


def test_cpu_platform_merges_the_adapter_into_the_running_engine(fake_vllm, tiny, tiny_model_dir):
    """On CPU (auto mode) no LoRA request is sent: the merged weights are reloaded in place, once per distinct
    adapter state; the base model comes back when a plain model asks; no sleep mode, a sized KV cache."""
    from peft import LoraConfig, get_peft_model

    fake_vllm.platform.cpu = True
    model, tokenizer = tiny
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    try:
        config = DecodingConfig(backend="vllm", max_new_tokens=3, show_progress=False)
        generate(peft_model, tokenizer, prompts()[:2], config)
        (llm,) = fake_vllm.instances
        assert "enable_lora" not in llm.kwargs and not llm.kwargs["enable_sleep_mode"]
        assert llm.kwargs["kv_cache_memory_bytes"] > 0 and "gpu_memory_utilization" not in llm.kwargs
        assert llm.calls[0]["lora"] is None and llm.reloaded[1] == ["model.safetensors"]
        generate(peft_model, tokenizer, prompts()[:2], config)  # same adapter values: no second reload
        assert llm.events.count("reload_weights") == 1
        generate(model.__class__.from_pretrained(str(tiny_model_dir)), tokenizer, prompts()[:1], config)
        assert llm.events.count("reload_weights") == 2 and llm.reloaded[0] == str(tiny_model_dir)
        assert "sleep1" not in llm.events and len(fake_vllm.instances) == 1
    finally:
        peft_model.unload()


def test_merged_weights_have_the_base_names_and_the_merged_values(tiny, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from citing_trl.generation import save_merged_weights

    model, _ = tiny
    base = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    try:
        save_merged_weights(peft_model, str(tmp_path))
        saved = load_file(str(tmp_path / "model.safetensors"))
        assert set(saved) == set(base)
        changed = {k for k in base if not torch.equal(saved[k], base[k])}
        assert changed and all("q_proj" in k or "v_proj" in k for k in changed)
        # the model itself is left unmerged: its base weights are the originals again (up to float rounding)
        assert all(torch.allclose(v, base[k.removeprefix("base_model.model.").replace(".base_layer.", ".")], atol=1e-6)
                   for k, v in peft_model.state_dict().items() if "lora_" not in k)
    finally:
        peft_model.unload()
