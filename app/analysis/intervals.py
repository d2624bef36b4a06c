"""The numbers behind a verdict: Student-t intervals of a mean, Welch intervals of a difference,
the verdict with its equivalence margin, and the seeds that would decide it.

Pure numpy and scipy; `app.analysis.stats` re-exports every name here (its docstring is the API).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from train import contract

CONFIDENCE = 0.95
POWER = 0.80  # of the seeds-needed estimate: the chance to see a real difference of the observed size
DEFAULT_MARGIN = contract.DEFAULT_MARGIN  # of the statistic (accuracy): closer than this is practically the same

BEST, WORSE, EQUIVALENT, WITHIN_NOISE, CANNOT_TELL = "best", "worse", "equivalent", "within_noise", "cannot_tell"
VERDICTS = (BEST, WORSE, EQUIVALENT, WITHIN_NOISE, CANNOT_TELL)
DECIDED = (WORSE, EQUIVALENT)
UNDECIDED = (WITHIN_NOISE, CANNOT_TELL)


def finite(values) -> np.ndarray:
    """Whether each value is a real number: not NaN, not ±inf, not ±1.8e308 (MLflow's SQL stores keep ±inf so)."""
    x = np.asarray(values, dtype=float)
    return np.isfinite(x) & (np.abs(x) < sys.float_info.max)


@dataclass(frozen=True)
class Summary:
    """n, mean, standard deviation and the Student-t interval of the mean of one group."""

    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); NaN for one run
    ci_low: float
    ci_high: float


def describe(values, confidence: float = CONFIDENCE, bounds: tuple[float, float] | None = None) -> Summary:
    """mean ± t(1 - α/2, n - 1) · s / √n; the interval is NaN for one run (no spread to go on).

    With `bounds` (an accuracy lies in [0, 1]) the interval is cut to them: the true mean lies
    inside, so the cut interval covers it as often, and the page never reads "[0.894, 1.026]"."""
    x = np.asarray(values, dtype=float)
    x = x[finite(x)]
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    low, high = (mean - half, mean + half) if bounds is None else (max(mean - half, bounds[0]), min(mean + half, bounds[1]))
    return Summary(n, mean, std, low, high)


@dataclass(frozen=True)
class Difference:
    """a − b with its Welch interval (NaN when either group has one run) and degrees of freedom."""

    value: float
    low: float
    high: float
    df: float


def welch(a: Summary, b: Summary, confidence: float = CONFIDENCE) -> Difference:
    """The difference of the means with Welch's interval (unequal spreads, Welch–Satterthwaite df)."""
    value = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return Difference(value, math.nan, math.nan, math.nan)
    va, vb = a.std**2 / a.n, b.std**2 / b.n
    if va + vb == 0:  # both groups repeat one value exactly (deterministic runs): the interval is a point
        return Difference(value, value, value, math.inf)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(va + vb)
    return Difference(value, value - half, value + half, df)


def verdict(best: Summary, other: Summary, shortfall: Difference, margin: float = DEFAULT_MARGIN) -> str:
    """`other` against `best` (`shortfall`: how far it falls short, positive = worse): see the module's text.
    The 95% interval inside ±margin is the two one-sided tests at 2.5% each (TOST)."""
    if best.n < 2 or other.n < 2:
        return CANNOT_TELL
    if -margin < shortfall.low and shortfall.high < margin:
        return EQUIVALENT
    return WORSE if shortfall.low > 0 else WITHIN_NOISE


def seeds_needed(difference: float, a: Summary, b: Summary, margin: float = 0.0, confidence: float = CONFIDENCE, power: float = POWER) -> float:
    """Seeds per group that would decide the comparison with `power`, at the groups' observed spread:
    n = 2 (z(1 − α/2) + z(power))² σ² / δ², σ² the mean of the two variances and δ the distance to a
    decision: the difference itself (to show it is not 0) or, when it is inside the margin, the room
    left to it (to show it is equivalent); the smaller n of the two. A normal approximation: with
    few seeds the t distribution's heavier tails need a few more. NaN when a spread is unknown; inf
    when the means are equal and there is no margin."""
    if a.n < 2 or b.n < 2:
        return math.nan
    variance = (a.std**2 + b.std**2) / 2
    distances = [d for d in (abs(difference), margin - abs(difference)) if d > 0]
    if not distances:
        return math.inf if variance > 0 else math.nan
    z = scipy_stats.norm.ppf(0.5 + confidence / 2) + scipy_stats.norm.ppf(power)
    return float(max(2, math.ceil(2 * z**2 * variance / max(distances) ** 2)))


def against(best: Summary, other: Summary, higher_is_better: bool, margin: float, is_best: bool) -> dict:
    """verdict, difference (how far `other` falls short of `best`, positive = worse), its interval, seeds_needed."""
    if is_best:
        return {"verdict": BEST, "difference": 0.0, "difference_low": math.nan, "difference_high": math.nan, "seeds_needed": math.nan}
    shortfall = welch(best, other) if higher_is_better else welch(other, best)
    decision = verdict(best, other, shortfall, margin)
    needed = seeds_needed(shortfall.value, best, other, margin) if decision == WITHIN_NOISE else math.nan  # decided: none
    return {
        "verdict": decision, "difference": shortfall.value, "difference_low": shortfall.low,
        "difference_high": shortfall.high, "seeds_needed": needed,
    }  # fmt: skip
