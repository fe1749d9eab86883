"""Small statistics shared by the gold metrics and the pairwise tables: normal quantiles, bootstrap intervals
(one sample, and paired) and the length-controlled win rate.

The intervals and the exact binomial test (:mod:`.paired`) are written with numpy and exact integer arithmetic
rather than ``scipy.stats.bootstrap`` / ``scipy.stats.binomtest``: those agree with them to about 1e-15 (the
tests check it) but not bit for bit (their percentile interpolation and binomial tail round differently), and
the project's recorded figures stay byte-identical this way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z_975 = 1.959963984540054  # the standard normal's 97.5% quantile (two-sided 5%), = scipy.stats.norm.ppf(0.975)
Z_80 = 0.8416212335729143  # its 80% quantile (80% power), = scipy.stats.norm.ppf(0.80)


def _percentile_interval(statistic, n: int, n_boot: int, seed: int, confidence: float) -> tuple[float, float]:
    """Percentile bootstrap: ``statistic(idx)`` of ``n_boot`` resamples of row indices drawn with replacement
    (seeded), cut at the two tails. (NaN, NaN) with no rows."""
    if n == 0:
        return (float("nan"), float("nan"))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(statistic(idx), [alpha, 1 - alpha])
    return (float(low), float(high))


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling items with replacement).
    Paired comparisons pass one value per item (e.g. 1 = win, 0 = not), so items are resampled as pairs."""
    x = np.asarray(list(values), dtype=float)
    return _percentile_interval(lambda idx: x[idx].mean(axis=1), x.size, n_boot, seed, confidence)


def paired_bootstrap_ci(before: Sequence[float], after: Sequence[float], n_boot: int = 2000, seed: int = 0,
                        confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(after) - mean(before)``: each resample draws row indices with
    replacement and uses those rows of BOTH systems (the resampler of :func:`bootstrap_ci`). (NaN, NaN) with
    no rows."""
    x = np.asarray(list(before), dtype=float)
    y = np.asarray(list(after), dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired_bootstrap_ci: {x.size} rows before but {y.size} after")
    return _percentile_interval(lambda idx: y[idx].mean(axis=1) - x[idx].mean(axis=1), x.size, n_boot, seed,
                                confidence)


@dataclass(frozen=True)
class LengthControlled:
    """A length-controlled win rate (fractions in [0, 1]). ``value`` is the fitted preference at zero length
    difference. ``separated`` is True when every decisive verdict (win or loss, not tie) agrees with the sign
    of the length difference in one direction (the longer answer always wins, or the shorter always does);
    then the verdicts say nothing about the preference at EQUAL length, ``value`` is only an artefact of the
    regularisation, and ``(low, high)`` = (0, 1) is the interval the data allow. Otherwise ``low`` and
    ``high`` are None (no interval is computed)."""

    value: float
    separated: bool = False
    low: float | None = None
    high: float | None = None


def is_length_separated(preferences: Sequence[float], length_diffs: Sequence[float]) -> bool:
    """True when there is at least one win and one loss, and every win and loss agrees with the sign of its
    length difference in the same direction (wins all longer and losses all shorter, or the reverse).
    A decisive verdict at zero length difference agrees with neither direction; ties are ignored."""
    y = np.asarray(list(preferences), dtype=float)
    d = np.asarray(list(length_diffs), dtype=float)
    decisive = (y == 0) | (y == 1)
    if not (np.any(y[decisive] == 1) and np.any(y[decisive] == 0)):
        return False
    signs = np.where(y[decisive] == 1, 1.0, -1.0) * np.sign(d[decisive])
    return bool(np.all(signs == 1) or np.all(signs == -1))


def length_controlled(preferences: Sequence[float], length_diffs: Sequence[float]) -> LengthControlled:
    """:func:`length_controlled_win_rate` with the separation check.

    Why an interval of (0, 1) under separation: the model is P(win) = sigmoid(b0 + b1 * x) with x = tanh(d /
    sd(d)), whose sign is the sign of d. When every win has d > 0 and every loss d < 0 (or the reverse),
    letting b1 grow without bound fits every decisive verdict perfectly whatever b0 is, so the likelihood of
    the decisive verdicts reaches its supremum for every value of sigmoid(b0): the preference at zero length
    difference is not identified, and the 95% profile-likelihood interval is the whole range (0, 1). (Ties
    at a non-zero difference do carry a little information in the model, so with ties the interval is
    conservative.) A bootstrap over rows would not show this: every resample of a separated sample is
    separated again, and the resampled fits would only repeat the regularisation artefact. The point value
    is still the regularised fit, for reference, and is unchanged for data that are not separated."""
    value = length_controlled_win_rate(preferences, length_diffs)
    if is_length_separated(preferences, length_diffs):
        return LengthControlled(value, separated=True, low=0.0, high=1.0)
    return LengthControlled(value)


def length_controlled_win_rate(preferences: Sequence[float], length_diffs: Sequence[float]) -> float:
    """The AlpacaEval 2 idea on any data: fit P(reference preferred) = sigmoid(b0 + b1 * tanh(d / sd(d))) where
    d = reference length - other length, then report sigmoid(b0), the preference at zero length difference.

    ``preferences`` are 1 (reference wins), 0 (loses) or 0.5 (tie; fitted as half a win and half a loss, as
    AlpacaEval counts ties). Unlike AlpacaEval's GLM there is no per-instruction difficulty term (that needs
    its own 805-instruction annotations). The slope gets a weak L2 penalty (C=10, intercept unpenalised) so
    a perfectly separated sample still gives a finite answer; that answer is an artefact of the penalty, so
    tables use :func:`length_controlled`, which flags separation and reports the interval (0, 1) instead.
    With one kind of outcome only, or fewer than 2 rows, the plain mean is returned."""
    y = np.asarray(list(preferences), dtype=float)
    d = np.asarray(list(length_diffs), dtype=float)
    if y.size == 0:
        return float("nan")
    if y.size < 2 or np.all(y == y[0]) or np.all((y == 0.5)):
        return float(y.mean())
    sd = d.std()
    x = np.tanh(d / sd) if sd > 0 else np.zeros_like(d)
    # a tie is one win and one loss with half weight each
    xs = np.concatenate([x, x])
    ys = np.concatenate([np.ones_like(y), np.zeros_like(y)])
    ws = np.concatenate([y, 1 - y])
    keep = ws > 0
    if len(set(ys[keep])) < 2:
        return float(y.mean())
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=10.0, solver="lbfgs", max_iter=1000)
    model.fit(xs[keep].reshape(-1, 1), ys[keep], sample_weight=ws[keep])
    return float(1 / (1 + np.exp(-model.intercept_[0])))
