"""The one teacher client of the project: rubric design, teacher revisions and the judge all go through it.

:class:`Teacher` (``client.py``) owns the cache (``cache.py``), the usage ledger (``ledger.py``), in-batch dedup
and resume; small backends behind one interface (``backends/``: a registry, ``base.py`` with the public
:class:`BackendContext` a backend works through, one file per backend) produce the answers:

- ``backend="openai"``: live requests to any OpenAI-compatible server (OpenAI itself, vLLM, ``transformers
  serve``, ...), with bounded concurrency. It retries rate limits (429), server errors (5xx), dropped
  connections, timeouts and garbled response bodies with exponential backoff and full jitter, and waits at least
  as long as a ``Retry-After`` header asks (``responses.py``). Other 4xx errors are not retried. Several samples
  of one request (:meth:`Teacher.complete_samples`) are asked for with ``n`` where the server honours it.
- ``backend="openai", mode="batch"``: the OpenAI Batch API at half price, resumable.
- ``backend="local"``: in-process generation with a causal LM (:func:`citing_trl.generation.generate`).

Every finished answer is appended to a JSONL cache on disk (flushed and fsynced record by record), so a
finished request is never sent again, whether the process is rerun or was killed. The API key is read from
the environment variable named by :attr:`TeacherConfig.api_key_env` when the client is built and is never
stored, logged, cached or put into an error message: ``secrets.py`` is the one module that reads it and masks it
out of any text a server sends back.
"""

from citing_trl.teacher.backends import (
    BackendContext,
    BatchBackend,
    Job,
    LocalBackend,
    OpenAIBackend,
    TeacherBackend,
    backend_names,
    register_backend,
)
from citing_trl.teacher.cache import CACHE_SCHEMA, Completion, TeacherCache, cache_key, canonical_json
from citing_trl.teacher.client import Teacher
from citing_trl.teacher.config import TeacherConfig
from citing_trl.teacher.errors import TeacherError
from citing_trl.teacher.ledger import UsageLedger
from citing_trl.teacher.responses import RETRYABLE_STATUS, parse_retry_after

__all__ = [
    "BackendContext", "BatchBackend", "CACHE_SCHEMA", "Completion", "Job", "LocalBackend", "OpenAIBackend",
    "RETRYABLE_STATUS", "Teacher", "TeacherBackend", "TeacherCache", "TeacherConfig", "TeacherError", "UsageLedger",
    "backend_names", "cache_key", "canonical_json", "parse_retry_after", "register_backend",
]
