"""Paired comparisons of two systems on the rows both answered: the difference with a paired bootstrap
interval, an exact test, and the smallest difference the rows can detect.

Two systems answer the same test rows, so their per-row outcomes are paired; the interval of a *difference*
is far narrower than the two systems' own intervals side by side, because the rows both get right or both get
wrong cancel. Three kinds of per-row outcome are compared here:

* **gold correctness** (:func:`paired_gold`): right/wrong under the source's primary metric. The difference is
  ``accuracy(after) - accuracy(before)``; its test is the exact McNemar test on the discordant rows
  (``b`` = wrong -> right, "fixed"; ``c`` = right -> wrong, "broken"): two-sided exact binomial,
  ``p = min(1, 2 * P[X <= min(b, c)])`` with ``X ~ Bin(b + c, 1/2)``, and ``p = 1`` when ``b + c = 0``.
* **judge verdicts** (:func:`paired_verdicts`): per row +1 (first-named system wins), 0 (tie), -1 (loses);
  the mean is ``win share - lose share``, its test the exact sign test on the decisive rows (the same
  binomial as McNemar, wins against losses).
* **scores in [0, 1]** (:func:`paired_scores`, e.g. token overlap with a reference answer where a source has no
  gold metric): the mean difference, and the sign test on the rows where one system scores higher.

The interval is a percentile bootstrap that resamples ROW INDICES, the same indices for both systems
(``n_boot`` resamples, seeded), so each resample keeps every row's pair together.

**Smallest detectable difference** (``mde``): the true difference a two-sided test at 5% would detect with 80%
power on ``n`` paired rows, by the normal approximation to McNemar's test,

    mde = (z_0.975 + z_0.80) * sqrt(p_disc / n) = 2.80 * sqrt(p_disc / n),

where ``p_disc`` is the share of rows on which the two systems differ (discordant rows for gold, decisive rows
for a judge; for scores, the mean squared per-row difference). The observed share is used; with no discordant
row at all it is taken as 1/n (one row), so ``mde`` never claims a resolution of 0. ``mde_worst`` is the same
with ``p_disc = 1`` (every row differs), ``2.80 / sqrt(n)``: what ``n`` rows can resolve before anything is
known, e.g. for sizing a run (n = 400 -> 14 points; n = 300 rows at 4% discordant -> 3.2 points). Both are
capped at 1 (100 points): a cap means these rows cannot detect any difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from citing_trl.evaluation.gold import fix_break
from citing_trl.evaluation.stats import Z_80, Z_975, paired_bootstrap_ci

MDE_FACTOR = Z_975 + Z_80


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided binomial p-value of a split ``k`` : ``n - k`` under p = 1/2:
    ``min(1, 2 * P[X <= min(k, n - k)])``, ``X ~ Bin(n, 1/2)``; 1 when ``n == 0``."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"binomial_two_sided: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    low = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(low + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact McNemar p-value for ``b`` wrong -> right and ``c`` right -> wrong rows (two-sided)."""
    return binomial_two_sided(b, b + c)


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test on the decisive rows (ties left out)."""
    return binomial_two_sided(wins, wins + losses)


def min_detectable_difference(n: int, discordant_share: float = 1.0) -> float:
    """``2.80 * sqrt(p_disc / n)`` (two-sided 5%, 80% power; see the module docstring), capped at 1 (no
    difference of accuracies can exceed 100 points); NaN when n == 0."""
    if n <= 0:
        return float("nan")
    return min(1.0, MDE_FACTOR * math.sqrt(discordant_share / n))


def _mde(n: int, discordant: float) -> dict:
    share = max(discordant, 1.0) / n if n else float("nan")
    return {"mde": min_detectable_difference(n, share), "mde_worst": min_detectable_difference(n)}


def paired_gold(before: Sequence[bool | None], after: Sequence[bool | None], n_boot: int = 2000,
                seed: int = 0) -> dict:
    """Paired gold comparison of two systems' correctness on the same rows (None = no gold; such rows are left
    out and counted in ``fix_break["no_gold"]``). Returns ``n``, ``before``/``after`` accuracy, ``diff`` =
    after - before, ``ci`` [low, high] (paired bootstrap), ``fixed`` (b, wrong -> right), ``broken``
    (c, right -> wrong), ``mcnemar_p``, ``mde``, ``mde_worst`` and the full ``fix_break`` counts."""
    counts = fix_break(before, after)
    pairs = [(float(b), float(a)) for b, a in zip(before, after) if b is not None and a is not None]
    n = len(pairs)
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    b, c = counts["wrong_to_right"], counts["right_to_wrong"]
    out = {"n": n, "before": sum(xs) / n if n else float("nan"), "after": sum(ys) / n if n else float("nan"),
           "diff": (sum(ys) - sum(xs)) / n if n else float("nan"),
           "ci": list(paired_bootstrap_ci(xs, ys, n_boot=n_boot, seed=seed)),
           "fixed": b, "broken": c, "mcnemar_p": mcnemar_exact(b, c), **_mde(n, b + c), "fix_break": counts}
    return out


def paired_verdicts(verdicts: Sequence[str], n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired judge comparison from per-row verdicts ``"a"`` (first-named system wins), ``"b"`` (loses),
    ``"tie"``; anything else (``"unparsed"``) is left out. Returns ``n``, ``wins``, ``ties``, ``losses``, ``net``
    = win share - lose share, ``ci`` of ``net`` (rows resampled), ``sign_p`` (exact sign test on the decisive
    rows), ``mde`` and ``mde_worst`` (on the ``net`` scale)."""
    score = {"a": 1.0, "tie": 0.0, "b": -1.0}
    values = [score[v] for v in verdicts if v in score]
    n = len(values)
    wins, losses = values.count(1.0), values.count(-1.0)
    lo, hi = paired_bootstrap_ci([0.0] * n, values, n_boot=n_boot, seed=seed)
    return {"n": n, "wins": wins, "ties": n - wins - losses, "losses": losses,
            "net": (wins - losses) / n if n else float("nan"), "ci": [lo, hi], "sign_p": sign_test(wins, losses),
            **_mde(n, wins + losses)}


def paired_scores(before: Sequence[float], after: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired comparison of per-row scores in [0, 1]: ``n``, ``before``/``after`` means, ``diff``, ``ci``,
    ``higher`` / ``lower`` / ``equal`` row counts (after vs before), ``sign_p`` on the unequal rows, ``mde``
    (with ``p_disc`` = mean squared per-row difference) and ``mde_worst``."""
    x = np.asarray(list(before), dtype=float)
    y = np.asarray(list(after), dtype=float)
    n = int(x.size)
    higher, lower = int(np.sum(y > x)), int(np.sum(y < x))
    spread = float(np.mean((y - x) ** 2)) if n else float("nan")
    return {"n": n, "before": float(x.mean()) if n else float("nan"), "after": float(y.mean()) if n else float("nan"),
            "diff": float((y - x).mean()) if n else float("nan"),
            "ci": list(paired_bootstrap_ci(x, y, n_boot=n_boot, seed=seed)), "higher": higher, "lower": lower,
            "equal": n - higher - lower, "sign_p": sign_test(higher, lower),
            "mde": min_detectable_difference(n, max(spread, 1.0 / n)) if n else float("nan"),
            "mde_worst": min_detectable_difference(n)}
