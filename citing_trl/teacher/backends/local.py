"""The ``local`` backend: in-process generation with a causal LM (:func:`citing_trl.generation.generate`).

Torch and transformers are imported when the backend first runs, so that building a ``Teacher`` (or importing
this package) stays cheap and a run answered from the cache never loads the model.
"""

from __future__ import annotations

import logging

from citing_trl.generation import DecodingConfig, generate
from citing_trl.models import ModelLoadError, load_model, resolve_model_path
from citing_trl.teacher.backends.base import BackendContext, Job, TeacherBackend
from citing_trl.teacher.errors import TeacherError

logger = logging.getLogger(__name__)


class LocalBackend(TeacherBackend):
    """In-process generation with a causal LM through :func:`citing_trl.generation.generate`. Sample j of every
    request is drawn in one pass seeded with j, so samples are reproducible for the same batch."""

    name = "local"
    summary = "in-process generation with a causal LM"

    def __init__(self, context: BackendContext):
        super().__init__(context)
        self.model, self.tokenizer = context.preloaded

    @classmethod
    def preflight(cls, config) -> bool:
        """The model reference resolves and its config loads (the weights are loaded when needed)."""
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(resolve_model_path(config.model))
        except Exception as err:
            raise ModelLoadError(f"--teacher_model {config.model!r}: the local teacher cannot be loaded "
                                 f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
        return True

    @classmethod
    def decoding_key(cls, config) -> dict:
        """The repetition controls, when set (keys of answers without them are those of before they existed)."""
        return {"repetition_penalty": config.repetition_penalty if config.repetition_penalty != 1.0 else None,
                "no_repeat_ngram_size": config.no_repeat_ngram_size or None}

    def run(self, jobs: list[Job], desc: str) -> None:
        if self.model is None:
            logger.info("loading local teacher %s", self.config.model)
            self.model, self.tokenizer = load_model(self.config.model)
        units = [(job, key, sample) for job in jobs for key, sample in zip(job.keys, job.samples)]
        done: set[str] = set()
        self.ledger.requests_sent += len(units)
        self.ledger.attempts += len(units)
        try:
            for sample in sorted({u[2] for u in units}):
                part = [u for u in units if u[2] == sample]
                temperature, max_tokens = part[0][0].temperature, part[0][0].max_tokens
                gen_config = DecodingConfig(
                    max_new_tokens=max_tokens, batch_size=self.config.local_batch_size, do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else 1.0, seed=sample,
                    repetition_penalty=self.config.repetition_penalty,
                    no_repeat_ngram_size=self.config.no_repeat_ngram_size,
                )

                def on_batch(indices: list[int], generations, part=part) -> None:
                    for pos, gen in zip(indices, generations):
                        job, key, _ = part[pos]
                        result = {"text": gen.text, "finish_reason": gen.finish_reason,
                                  "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens}
                        self.context.store(job, key, result, sync=False)
                        done.add(key)
                    self.context.cache.fsync()

                label = desc if sample == 0 else f"{desc} (sample {sample})"
                generate(self.model, self.tokenizer, [u[0].messages for u in part], gen_config, desc=label,
                         on_batch=on_batch)
        except Exception as err:
            unfinished = [u for u in units if u[1] not in done]
            self.ledger.failures += len(unfinished)
            self.ledger.count_error("local")
            job, key, _ = unfinished[0] if unfinished else units[0]
            reason = f"local generation with {self.config.model!r} failed: {type(err).__name__}: {err}"
            raise TeacherError(
                f"{self.context.describe(job, key)} and {max(len(unfinished) - 1, 0)} "
                f"other unfinished request(s): {reason}", index=job.index, key=key, reason=reason,
            ) from err
