"""The one generation routine of the project.

Student rollouts r(k) (Algorithm 1 line 8), self-revision at inference (lines 13-14), the local teacher
backend, baseline sampling and evaluation answers all go through :func:`generate`.

Prompts are sorted by token length and cut into batches so that little padding is wasted; padding is on
the left so every row's new tokens start at the same column; results come back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@dataclass
class GenerationConfig:
    """Decoding settings shared by every caller of :func:`generate`."""

    max_new_tokens: int = field(default=256, metadata={"help": "Most tokens generated per prompt (paper: 512)."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per forward pass."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (only with do_sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (only with do_sample)."})
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

    def __post_init__(self):
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size must be >= 0, got {self.no_repeat_ngram_size!r}")

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
            NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
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


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not show, transient=False,
    )


def generate(
    model,
    tokenizer,
    prompts: Sequence[str | list[dict]],
    config: GenerationConfig | None = None,
    desc: str = "generating",
    on_batch: Callable[[list[int], list[Generation]], None] | None = None,
) -> list[Generation]:
    """Generate one completion per prompt, batched, in input order.

    ``on_batch(indices, generations)`` is called after every batch (indices into ``prompts``), so callers
    can write finished work to disk as it arrives.
    """
    import torch

    config = config or GenerationConfig()
    if not prompts:
        return []
    texts = [render_prompt(tokenizer, p) for p in prompts]
    # Chat templates already insert the special tokens they need.
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    if config.max_prompt_tokens:
        encoded = [ids[-config.max_prompt_tokens :] for ids in encoded]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = _eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    results: list[Generation | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    with _progress(config.show_progress) as progress:
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
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            with torch.no_grad():
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
            new = out[:, width:].tolist()
            batch_results = []
            for row, i in enumerate(idx):
                tokens = new[row]
                finish = "length"
                sampled = tokens
                for pos, tok in enumerate(tokens):
                    if tok in eos_ids:
                        sampled = tokens[: pos + 1]
                        tokens = tokens[:pos]
                        finish = "stop"
                        break
                else:
                    # generate() pads finished rows; a row that never produced EOS ran out of budget
                    while tokens and tokens[-1] == pad_id and pad_id not in eos_ids:
                        tokens = tokens[:-1]
                    sampled = tokens
                gen = Generation(
                    text=tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                    prompt_tokens=len(encoded[i]),
                    completion_tokens=len(tokens),
                    finish_reason=finish if len(tokens) < config.max_new_tokens or finish == "stop" else "length",
                    token_ids=list(sampled),
                )
                results[i] = gen
                batch_results.append(gen)
            if on_batch is not None:
                on_batch(list(idx), batch_results)
            progress.advance(task, len(idx))
    if was_training:
        model.train()
    return results  # type: ignore[return-value]


def _eos_ids(model, tokenizer) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
    return sorted(ids)
