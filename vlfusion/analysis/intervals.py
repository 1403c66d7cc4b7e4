"""95% intervals for the accuracies a sweep compares, and when two variants count as separated.

Over seeds (n >= 2): the t interval of the mean, mean ± t(0.975, n-1) · sd / √n: what another seed of
the same variant would move the mean by. For one seed: a percentile bootstrap over the evaluated
examples, resampling the count with replacement; for examples scored 0 or 1 (ITM, pairs, the shapes
world's VQA) a resample's accuracy is Binomial(count, accuracy) / count, so it is drawn that way from the
result's accuracy and count alone. A VQA v2 soft score (0, 0.3, 0.6, 0.9, 1) varies less than a 0/1
score of the same mean, so the interval is then a little wide, never narrow. A one-seed interval says how
much the evaluation set's sampling moves the figure, not how much training does: it is narrower than a
seed interval, and the report names which one each cell has.

Two variants are *separated* on a metric when their intervals do not overlap.
"""

from __future__ import annotations

import math
import statistics
from typing import NamedTuple

import numpy as np

LEVEL = 0.95
BOOTSTRAP_DRAWS = 10_000


class Cell(NamedTuple):
  """One variant's figure: mean, sample sd (None for one value), n values, 95% interval (lo, hi; None
  without one) and what the interval is over ("seeds", "examples" or "")."""

  mean: float
  sd: float | None
  n: int
  lo: float | None = None
  hi: float | None = None
  over: str = ""


def t_quantile(df: int, level: float = LEVEL) -> float:
  """The two-sided `level` quantile of Student's t with `df` degrees of freedom."""
  from scipy import stats

  return float(stats.t.ppf(0.5 + level / 2, df))


def seed_interval(values: list[float], level: float = LEVEL) -> tuple[float, float]:
  """The t interval of the mean of `values` (two or more)."""
  n = len(values)
  if n < 2:
    raise ValueError(f"a seed interval needs two or more values, got {n}")
  mean, sd = statistics.fmean(values), statistics.stdev(values)
  half = t_quantile(n - 1, level) * sd / math.sqrt(n)
  return mean - half, mean + half


def bootstrap_interval(accuracy: float, count: int, level: float = LEVEL,
                       draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> tuple[float, float]:
  """The percentile bootstrap interval of an accuracy over `count` examples scored 0 or 1."""
  if count < 1:
    raise ValueError(f"a bootstrap interval needs examples, got count={count}")
  p = min(max(accuracy, 0.0), 1.0)
  resampled = np.random.default_rng(seed).binomial(count, p, size=draws) / count
  lo, hi = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])
  return float(lo), float(hi)


def cell(values: list[float], count: int | None = None, interval: bool = True) -> Cell:
  """The figure of `values` (accuracies, in [0, 1]) over seeds, with (unless not `interval`) a seed
  interval clipped to [0, 1] for two or more, or for one value with a `count` of evaluated examples a
  bootstrap interval."""
  n = len(values)
  mean = statistics.fmean(values)
  if n > 1 and not interval:
    return Cell(mean, statistics.stdev(values), n)
  if n > 1:  # an accuracy's interval stops at 0 and 1, where the t interval of a few seeds may not.
    lo, hi = seed_interval(values)
    return Cell(mean, statistics.stdev(values), n, max(lo, 0.0), min(hi, 1.0), "seeds")
  if interval and count and 0.0 <= mean <= 1.0:
    return Cell(mean, None, n, *bootstrap_interval(mean, count), "examples")
  return Cell(mean, None, n)


def separated(a: Cell, b: Cell) -> bool:
  """Whether the intervals of `a` and `b` both exist and do not overlap."""
  if None in (a.lo, a.hi, b.lo, b.hi):
    return False
  return a.hi < b.lo or b.hi < a.lo
