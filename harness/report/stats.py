"""Is a difference between two models bigger than the noise of the evaluation?

Both models answered the same eval items in the same order, so the interval is a paired
bootstrap over items: resample items, recompute the mean difference. Seeded, so a report
rebuilt from the same study says the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RESAMPLES = 2000  # enough for stable 2.5/97.5 percentiles at report precision
CONFIDENCE = 0.95  # the interval's coverage
SEED = 0  # fixed: the same study always gets the same interval


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) over paired items, with a bootstrap interval."""

    delta: float
    low: float
    high: float
    items: int
    seeds: tuple[int, int] = (1, 1)  # training seeds behind each side: (1, 1) is evaluation noise only
    spread: list[float] = field(default_factory=list)  # the first side's mean score per seed

    @property
    def significant(self) -> bool:
        """The interval excludes zero: the difference exceeds the evaluation's noise."""
        return self.low > 0 or self.high < 0


def paired_difference(a: list[float], b: list[float]) -> Difference | None:
    """None when the two lists are not paired items (different lengths, or empty)."""
    if not a or len(a) != len(b):
        return None
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, len(diff), size=(RESAMPLES, len(diff)))
    means = diff[picks].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Difference(float(diff.mean()), float(low), float(high), len(diff))


def seeded_difference(a: list[list[float]], b: list[list[float]]) -> Difference | None:
    """Mean over a's training seeds minus mean over b's, each seed a list of per-item scores (items
    paired across all of them; a single item when only the metric's value is known).

    The interval is a two-level bootstrap: each resample draws seeds with replacement on each side,
    and items with replacement (the same items for every seed), so it holds both the training-seed
    noise and the evaluation's."""
    if not a or not b or len({len(x) for x in a + b}) != 1 or not a[0]:
        return None
    sa, sb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(SEED)
    items = rng.integers(0, sa.shape[1], size=(RESAMPLES, sa.shape[1]))
    rows = np.arange(RESAMPLES)[:, None]

    def resampled(runs: np.ndarray) -> np.ndarray:
        per_seed = runs[:, items].mean(axis=-1).T  # (resamples, seeds): each seed on the drawn items
        seeds = rng.integers(0, runs.shape[0], size=(RESAMPLES, runs.shape[0]))
        return per_seed[rows, seeds].mean(axis=1)

    means = resampled(sa) - resampled(sb)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    spread = [float(x) for x in sa.mean(axis=1)]
    delta = float(sa.mean() - sb.mean())
    return Difference(delta, float(low), float(high), sa.shape[1], (len(a), len(b)), spread)
