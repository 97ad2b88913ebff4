"""Where the robot may move objects: an axis-aligned box, a table plane and the arm's reach.

Defaults describe the Franka Kitchen world (jflow.robots.panda: base at (0, 0, 1.8) m, counter
top near z = 1.6 m). Meters, world frame.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jflow.errors import ConfigError
from jflow.robots import panda


@dataclasses.dataclass(frozen=True)
class Workspace:
    """An axis-aligned workspace box, the table height and the arm's reach sphere (world, m)."""

    lower: tuple[float, float, float] = (-1.5, -0.6, 1.5)
    upper: tuple[float, float, float] = (1.2, 1.6, 3.3)
    table_height: float = 1.5
    """Objects must stay above this z (the support surface; a small margin applies)."""
    reach_center: tuple[float, float, float] = tuple(float(v) for v in panda.shoulder_position())
    max_reach: float = panda.MAX_REACH + 0.1
    """End-effector positions farther than this from ``reach_center`` are unreachable (m)."""

    def __post_init__(self):
        lo, hi = np.asarray(self.lower, float), np.asarray(self.upper, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
            raise ConfigError(f"Workspace needs lower < upper (3 values each), got {lo}, {hi}")
        if not self.max_reach > 0:
            raise ConfigError(f"Workspace.max_reach must be positive, got {self.max_reach}")


__all__ = ["Workspace"]
