"""TeacherConfig: how the teacher model is reached (backend, model, server, retries, decoding, batch mode).

Shared by rubric design, teacher revisions and the judge; recipes parse it under a flag prefix
(:func:`citing_trl.configs.prefixed`), so its rules name each field as a flag through :func:`citing_trl.errors.check`.
The ``backend`` and ``mode`` choices are those of the backend registry (:mod:`citing_trl.teacher.backends`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import citing_trl.teacher.backends as registry
from citing_trl.errors import check, check_choice


@dataclass
class TeacherConfig:
    """How the teacher model is reached. Shared by rubric design, teacher revisions and the judge."""

    backend: str = field(
        default="local",
        metadata={"help": f"One of the registered backends: {registry.backends_help()}."},
    )
    model: str = field(
        default="embedded",
        metadata={"help": "For `openai`: the served model name, exactly as the server expects it. For `local`: a "
                          "model folder, a Hub id, or `embedded` (SmolLM2-135M-Instruct shipped in a wheel)."},
    )
    base_url: str | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible base URL ending in `/v1` (e.g. `http://127.0.0.1:8000/v1`); None uses "
                          "the OpenAI API."},
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "NAME of the environment variable that holds the API key (the key itself is only read "
                          "from the environment, never stored or logged). When it is unset the dummy key `EMPTY` "
                          "is sent, which local servers accept."},
    )
    max_concurrency: int = field(default=8, metadata={"help": "Most requests in flight at once (`openai`)."})
    max_retries: int = field(
        default=6, metadata={"help": "Retries per request after the first attempt, for retryable failures."}
    )
    timeout: float = field(default=120.0, metadata={"help": "Seconds one attempt may take before it is abandoned."})
    backoff_base: float = field(
        default=1.0,
        metadata={"help": "Backoff before retry n is uniform in [0, min(backoff_max, backoff_base * 2**(n-1))] "
                          "seconds (full jitter). A `Retry-After` header from the server is always honoured, even "
                          "beyond backoff_max."},
    )
    backoff_max: float = field(default=60.0, metadata={"help": "Upper bound of the jittered backoff, in seconds."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature; 0 asks for greedy decoding."})
    max_tokens: int = field(default=512, metadata={"help": "Most completion tokens per request."})
    local_batch_size: int = field(default=8, metadata={"help": "Prompts per forward pass (`local`)."})
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "`local`: penalty on tokens the answer already holds (1.0 = off); see "
                                       "citing_trl.generation.DecodingConfig. Part of the cache key when set."},
    )
    no_repeat_ngram_size: int = field(
        default=0, metadata={"help": "`local`: never repeat an n-gram of this size within an answer (0 = off). Part "
                                     "of the cache key when set."},
    )
    price_prompt_per_1m: float = field(
        default=0.0, metadata={"help": "Price per million prompt tokens, for the ledger's cost estimate."}
    )
    price_completion_per_1m: float = field(
        default=0.0, metadata={"help": "Price per million completion tokens, for the ledger's cost estimate."}
    )
    mode: str = field(
        default="live",
        metadata={"help": f"How requests are sent, and the backends that serve each mode: {registry.modes_help()}. "
                          "`live` sends one request per answer and answers at once; `batch` uses the OpenAI Batch "
                          "API at half the price, answers within its 24h window (the batch id is saved next to the "
                          "cache so a killed run polls the same batch instead of submitting again)."},
    )
    batch_poll_interval: float = field(default=30.0, metadata={"help": "Seconds between status polls of a batch."})
    batch_retry: str = field(
        default="live",
        metadata={"help": "What happens to batch lines that failed or expired: `live` (sent as live requests) or "
                          "`batch` (submitted again in a new batch, up to batch_max_rounds batches in all)."},
    )
    batch_max_rounds: int = field(default=3, metadata={"help": "Most batch rounds per call with batch_retry=batch."})
    batch_max_requests: int = field(
        default=50000, metadata={"help": "Most lines per batch file (OpenAI's limit is 50,000); more are split."}
    )
    fail_fast: bool = field(
        default=True,
        metadata={"help": "After the first request fails for good, start no new requests and stop retrying the "
                          "others (answers already in flight are still cached). False keeps going and reports "
                          "every failure at the end."},
    )

    def __post_init__(self):
        """Each rule names the field as a flag; a prefixed view (``--teacher_*``, ``--judge_*``) renames it."""
        check_choice("backend", self.backend, registry.backend_names())
        check_choice("mode", self.mode, registry.backend_modes())
        offered = registry.backends_for_mode(self.mode)
        check(any(cls.name == self.backend for cls in offered), "mode",
              f"{self.mode!r} needs backend {' or '.join(repr(cls.name) for cls in offered)}"
              + (f" ({offered[0].summary})" if len(offered) == 1 and offered[0].summary else ""), self.mode)
        check_choice("batch_retry", self.batch_retry, ("live", "batch"))
        check(bool(self.model and str(self.model).strip()), "model", "must not be empty", self.model)
        if self.base_url is not None:
            check(self.base_url.startswith(("http://", "https://")), "base_url",
                  "must be an http(s) URL such as http://127.0.0.1:8000/v1", self.base_url)
        for name in ("max_concurrency", "max_tokens", "local_batch_size", "batch_max_rounds", "batch_max_requests"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name,
                  "must be a whole number >= 1", value)
        for name in ("max_retries", "backoff_base", "backoff_max", "temperature", "price_prompt_per_1m",
                     "price_completion_per_1m"):
            check(getattr(self, name) >= 0, name, "must be >= 0", getattr(self, name))
        for name in ("timeout", "batch_poll_interval", "repetition_penalty"):
            check(getattr(self, name) > 0, name, "must be > 0", getattr(self, name))
        check(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "must be >= 0 (0 = off)",
              self.no_repeat_ngram_size)
