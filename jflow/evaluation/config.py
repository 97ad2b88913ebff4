"""The configuration of ``jflow eval-flow`` (a light module: ``jflow --help`` imports it without
JAX)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

from jflow.errors import ConfigError, require_positive

REPORT_JSON = "eval_flow.json"
REPORT_MARKDOWN = "eval_flow.md"
REPORT_FIGURE = "eval_flow.png"


@dataclasses.dataclass(frozen=True)
class EvalFlowConfig:
    """Sample flows for held-out kitchen episodes and report 3D ADE/FDE against the ground
    truth, beside three baselines (zero motion, mean training flow of the task, nearest
    training clip), and how often the flow moves in the instructed direction (docs/training.md)."""

    run: Path
    """A ``jflow train`` run folder (config.json and checkpoints/); its EMA weights are used."""
    data: Path
    """The held-out dataset folder (``jflow gen-kitchen`` output, other seeds than training)."""
    train_data: Path | None = None
    """The training dataset (baselines and normalisation statistics); default: the dataset the
    run trained on, as its config.json records it."""
    out: Path | None = None
    """Folder for eval_flow.json, eval_flow.md and eval_flow.png; default ``<run>/eval``."""
    samples_per_episode: int = 4
    """Flows sampled per held-out episode (ADE/FDE are averaged over them; the best is also
    reported)."""
    steps: int | None = None
    """Sampling steps (default: the model's, 10 Euler steps for flow matching)."""
    sampler: Literal["ddim", "ddpm", "euler", "heun"] | None = None
    """Default: the model's (euler for flow matching, ddim for the DDPM objectives)."""
    guidance_scale: float = 1.0
    """Classifier-free guidance scale (1 = conditional prediction only)."""
    sample_shift: float | None = None
    """Flow matching: shift of the sampler's time grid (default: the model's
    ``objective.sample_shift``; 1 = uniform steps)."""
    seed: int = 0
    batch_size: int = 8
    """Held-out episodes sampled together in one call."""
    clamp_first_frame: bool = True
    """Replace the sampled frame 0 by the known initial points at every step (docs/model.md)."""
    nn_image_size: int = 16
    """Side of the downsampled first RGB-D frame the nearest-neighbour baseline compares."""
    nn_text_tolerance: float = 0.001
    """Nearest neighbour: training clips whose instruction cosine is within this of the best
    are candidates; the closest first frame among them wins."""
    nn_max_depth: float = 5.0
    """Nearest neighbour: depth is clipped to this many meters before frames are compared."""
    direction_min_motion: float = 0.005
    """Episodes whose ground-truth mean displacement is shorter (meters) have no direction and
    are left out of the direction fraction (they are counted in the report)."""
    skip_unseen_tasks: bool = False
    """Leave out held-out episodes of tasks absent from the training data (default: refuse
    with an error naming them)."""
    max_episodes: int | None = None
    """Evaluate only the first N held-out episodes (quick checks)."""
    fast_compile: bool = False
    """Compile the sampler at XLA optimisation level 0 (tests and quick checks)."""
    progress: bool = True

    def validate(self) -> EvalFlowConfig:
        """Check every value before any work starts; raises a ConfigError naming the problem."""
        if self.samples_per_episode < 1:
            raise ConfigError(f"samples_per_episode must be >= 1, got {self.samples_per_episode}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if not math.isfinite(self.guidance_scale):
            raise ConfigError(f"guidance_scale must be finite, got {self.guidance_scale}")
        if self.sample_shift is not None:
            require_positive("sample_shift", self.sample_shift)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.nn_image_size < 1:
            raise ConfigError(f"nn_image_size must be >= 1, got {self.nn_image_size}")
        if not 0 <= self.nn_text_tolerance <= 2:
            raise ConfigError(f"nn_text_tolerance must be in [0, 2], got {self.nn_text_tolerance}")
        if self.nn_max_depth <= 0:
            raise ConfigError(f"nn_max_depth must be > 0 meters, got {self.nn_max_depth}")
        if self.direction_min_motion < 0:
            raise ConfigError(
                f"direction_min_motion must be >= 0 meters, got {self.direction_min_motion}"
            )
        if self.max_episodes is not None and self.max_episodes < 1:
            raise ConfigError(f"max_episodes must be >= 1, got {self.max_episodes}")
        return self

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else Path(self.run) / "eval"

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()
        }
