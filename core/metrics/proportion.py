"""A proportion with its 95% Wilson interval: how sure a score on n subjects is.

A side accuracy of 0.58 on 16 subjects cannot be told from chance (0.50); on 100 it can. Every
clinical-correctness score medm2g writes carries its n and this interval, so a reader sees that
before reading the number. Wilson's interval (not the normal approximation) stays inside [0, 1]
and keeps its coverage near 0 and 1, where generators' scores often sit.
"""

from __future__ import annotations

import math

import attrs

Z_95 = 1.959963984540054
"""The standard normal's 97.5% quantile: a two-sided 95% interval."""


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n`` (``(0, 1)`` for n = 0: nothing known)."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exactly 0 and 1 there (no rounding residue)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@attrs.frozen
class Proportion:
    """``successes`` of ``n``, with its interval; written into scores as ``<name>``, ``<name>_low``,
    ``<name>_high`` and ``<name>_n`` so a script reads all four."""

    successes: int
    n: int

    @property
    def value(self) -> float:
        return self.successes / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n)

    def as_scores(self, name: str) -> dict[str, float]:
        low, high = self.interval
        return {name: self.value, f"{name}_low": low, f"{name}_high": high, f"{name}_n": self.n}


def format_proportion(scores: dict, name: str, digits: int = 2) -> str:
    """``0.58 [0.36, 0.77]`` from the keys :meth:`Proportion.as_scores` wrote (just the value where
    an older record has no interval)."""
    value = f"{scores[name]:.{digits}f}"
    if f"{name}_low" not in scores:
        return value
    return f"{value} [{scores[name + '_low']:.{digits}f}, {scores[name + '_high']:.{digits}f}]"
