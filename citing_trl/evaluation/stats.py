"""Small statistics shared by the gold metrics and the pairwise tables: bootstrap intervals and the
length-controlled win rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling items with replacement).
    Paired comparisons pass one value per item (e.g. 1 = win, 0 = not), so items are resampled as pairs."""
    x = np.asarray(list(values), dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return (float(low), float(high))


def length_controlled_win_rate(preferences: Sequence[float], length_diffs: Sequence[float]) -> float:
    """The AlpacaEval 2 idea on any data: fit P(reference preferred) = sigmoid(b0 + b1 * tanh(d / sd(d))) where
    d = reference length - other length, then report sigmoid(b0), the preference at zero length difference.

    ``preferences`` are 1 (reference wins), 0 (loses) or 0.5 (tie; fitted as half a win and half a loss, as
    AlpacaEval counts ties). Unlike AlpacaEval's GLM there is no per-instruction difficulty term (that needs
    its own 805-instruction annotations). The slope gets a weak L2 penalty (C=10, intercept unpenalised) so
    a perfectly separated sample still gives a finite answer. With one kind of outcome only, or fewer than 2
    rows, the plain mean is returned."""
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
