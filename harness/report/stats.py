"""Is a difference between two models bigger than the noise of the evaluation?

Both models answered the same eval items in the same order, so the interval is a paired
bootstrap over items: resample items, recompute the mean difference. Seeded, so a report
rebuilt from the same study says the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

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
