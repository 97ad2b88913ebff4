"""Settings of the flow world model: the network (:class:`FlowModelConfig`) and its training
objective and noise schedule (:class:`ObjectiveConfig`).

Both are frozen dataclasses with a stable serialisable form (``to_dict`` / ``from_dict``), so a
checkpoint can carry the config it was trained with, and :func:`config_diff` can list what
differs when a checkpoint of another architecture is loaded.

Three presets:

- :meth:`FlowModelConfig.default`: small enough to train on a 2-core CPU in minutes;
- :meth:`FlowModelConfig.tiny`: for unit tests (compiles in a few seconds);
- :meth:`FlowModelConfig.large`: the 3DFlowAction / AnimateDiff scale (Stable-Diffusion-1.5
  UNet widths, two ResNet blocks per level, CLIP ViT-L/14 text width) for GPU/TPU users.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jflow.errors import ConfigError, UnknownNameError, require_positive

OBJECTIVES = ("ddpm_eps", "ddpm_v", "flow_matching")
SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddim", "ddpm", "euler", "heun")
TARGETS = ("displacement", "absolute")
FLOW_PREDICTIONS = ("sample", "velocity")
POINT_LOSSES = ("mse", "pseudo_huber")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """What the network is trained to predict, and the noise schedule."""

    kind: str = "flow_matching"
    """``"ddpm_eps"`` (predict the noise), ``"ddpm_v"`` (predict v = sqrt(a) eps - sqrt(1-a) x0)
    or ``"flow_matching"`` (rectified flow: predict the velocity eps - x0)."""
    schedule: str = "cosine"
    """DDPM noise schedule, ``"linear"`` or ``"cosine"`` (ignored by flow matching)."""
    num_train_steps: int = 1000
    """DDPM diffusion steps N (flow matching samples continuous t and feeds the network t * N)."""
    beta_start: float = 1e-4
    beta_end: float = 0.02
    cosine_s: float = 0.008
    text_drop_prob: float = 0.1
    """Probability that an example's instruction is dropped in training (classifier-free
    guidance)."""
    flow_prediction: str = "sample"
    """Flow matching only: the network outputs the clean flow ``x0`` (``"sample"``; the
    velocity is ``(z_t - x0_hat) / t``) or the velocity ``eps - x0`` (``"velocity"``). Sample
    prediction makes the pure-noise step a regression onto the conditional mean, which a small
    network learns in a CPU budget; velocity prediction asks it to reproduce the noise."""
    target: str = "displacement"
    """What the diffusion runs over. ``"displacement"``: the (u, v, depth) channels minus their
    frame-0 values (the known initial points), times ``displacement_scale``, so frame 0 is zero
    and the network spends its capacity on the motion; ``"absolute"``: the normalised grid as
    is. Either way :func:`jflow.models.sample` returns the absolute normalised grid, and the
    visibility channel is absolute."""
    displacement_scale: float = 2.0
    """Multiplies normalised displacements (kitchen data: RMS 0.2-0.7 per channel) towards unit
    scale, as the noise has."""
    precondition: bool = False
    """Flow matching with sample prediction only: the network's output ``F`` is turned into the
    clean-sample estimate with a skip from its input, ``x0_hat = c_skip(t) z_t + c_out(t) F``,
    and it sees ``c_in(t) z_t`` (Karras et al. 2022's preconditioning written for the rectified
    path ``z_t = (1 - t) x0 + t eps`` with data scale ``sigma_data``): ``s^2 = (1 - t)^2 sd^2 +
    t^2``, ``c_in = 1 / s``, ``c_skip = (1 - t) sd^2 / s^2``, ``c_out = t sd / s``. At t = 1 the
    output is ``sd F`` (a regression onto the conditional mean); near t = 0 the skip carries
    the input, so the network does not spend its capacity copying it. The loss stays the MSE
    of ``x0_hat``."""
    sigma_data: float = 1.0
    """Scale of the diffusion target used by the preconditioning (the displacement target is
    scaled towards unit RMS, the visibility channel is +-1)."""
    visibility_weight: float = 1.0
    """Weight of the visibility channel in the loss (the (u, v, depth) channels weigh 1). Its
    error dominates the loss (kitchen: MSE 0.55 against 0.04 for the positions), but the
    planner needs the predicted visibility: a 30-minute run at 0.25 predicted too few visible
    points for slide-cabinet and kettle plans (docs/pipeline.md), so the default stays 1."""
    time_shift: float = 1.0
    """Flow matching: training times are drawn as ``t = k u / (1 + (k - 1) u)`` with ``u``
    uniform in [0, 1] and ``k = time_shift`` (Esser et al. 2024's shift). 1 is uniform; above 1
    more of the batch lands at high noise, where the network learns the conditional mean that a
    point estimate and the first sampling steps rest on."""
    point_loss: str = "mse"
    """How a point's (u, v, depth) error enters the loss. ``"mse"``: the squared error of each
    channel. ``"pseudo_huber"``: ``sqrt(|e|^2 + c^2) - c`` of the point's 3-vector error ``e``
    (``c = huber_c``), which is quadratic below ``c`` and grows like ``|e|`` above it: every
    point pulls with about the same force however large its error, so the small motions (knobs,
    switches) are not drowned by the large ones, and at high noise the network regresses onto
    a median rather than the mean (the estimate that minimises a mean Euclidean error such as
    ADE). The visibility channel keeps its squared error."""
    huber_c: float = 0.03
    """``c`` of the pseudo-Huber loss, in diffusion units (on the kitchen data, whose x and y
    standard deviation is about 22 px at 128x128, one pixel is about 0.28 at
    ``displacement_scale`` 6, so 0.03 is about a tenth of a pixel)."""
    default_sampler: str = ""
    """Sampler used when ``sample(..., sampler=None)``; empty = ``"ddim"`` for DDPM objectives,
    ``"euler"`` for flow matching."""
    default_steps: int = 0
    """Sampling steps when ``sample(..., steps=None)``; 0 = 50 for DDIM, 10 for Euler/Heun."""
    sample_shift: float = 1.0
    """Flow matching: the sampler's times are ``t_i = shift(1 - i / steps)`` with the shift of
    ``time_shift`` at ``k = sample_shift``, so that ``k > 1`` takes smaller steps at high noise
    and larger ones near the data (Esser et al. 2024 sample with the shift they train with).
    1 = uniform steps."""

    def __post_init__(self) -> None:
        if self.kind not in OBJECTIVES:
            raise UnknownNameError("objective", self.kind, OBJECTIVES)
        if self.schedule not in SCHEDULES:
            raise UnknownNameError("noise schedule", self.schedule, SCHEDULES)
        if self.num_train_steps < 2:
            raise ConfigError(f"num_train_steps must be >= 2, got {self.num_train_steps}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ConfigError(
                f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}"
            )
        if not 0 <= self.text_drop_prob < 1:
            raise ConfigError(f"text_drop_prob must be in [0, 1), got {self.text_drop_prob}")
        if self.flow_prediction not in FLOW_PREDICTIONS:
            raise UnknownNameError(
                "flow-matching prediction", self.flow_prediction, FLOW_PREDICTIONS
            )
        if self.target not in TARGETS:
            raise UnknownNameError("diffusion target", self.target, TARGETS)
        if not self.displacement_scale > 0:
            raise ConfigError(f"displacement_scale must be > 0, got {self.displacement_scale}")
        if not self.sigma_data > 0:
            raise ConfigError(f"sigma_data must be > 0, got {self.sigma_data}")
        if not self.visibility_weight >= 0:
            raise ConfigError(f"visibility_weight must be >= 0, got {self.visibility_weight}")
        require_positive("time_shift", self.time_shift)
        require_positive("sample_shift", self.sample_shift)
        if self.point_loss not in POINT_LOSSES:
            raise UnknownNameError("point loss", self.point_loss, POINT_LOSSES)
        require_positive("huber_c", self.huber_c)
        if self.default_sampler and self.default_sampler not in SAMPLERS:
            raise UnknownNameError("sampler", self.default_sampler, SAMPLERS)
        if self.default_steps < 0:
            raise ConfigError(f"default_steps must be >= 0, got {self.default_steps}")

    @property
    def is_ddpm(self) -> bool:
        return self.kind != "flow_matching"

    @property
    def sampler(self) -> str:
        if self.default_sampler:
            return self.default_sampler
        return "ddim" if self.is_ddpm else "euler"

    @property
    def steps(self) -> int:
        if self.default_steps:
            return self.default_steps
        return 50 if self.sampler in ("ddim", "ddpm") else 10

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ObjectiveConfig:
        if isinstance(data, dict) and "target" not in data:
            # Saved before the field existed: those models diffused the absolute grid.
            data = {**data, "target": "absolute"}
        if isinstance(data, dict) and "flow_prediction" not in data:
            data = {**data, "flow_prediction": "velocity"}  # the only kind before the field
        if isinstance(data, dict):
            # Saved before these fields existed: no preconditioning, equal channel weights,
            # uniform training times, squared errors.
            old = {"precondition": False, "visibility_weight": 1.0, "time_shift": 1.0}
            data = {**old, "point_loss": "mse", **data}
        return _from_dict(ObjectiveConfig, data)


@dataclasses.dataclass(frozen=True)
class FlowModelConfig:
    """Architecture of :class:`jflow.models.FlowUNet` (and its objective).

    The network sees normalised grid-layout flows ``[B, T, grid_h, grid_w, 4]``.
    """

    num_frames: int = 16
    grid_hw: tuple[int, int] = (16, 16)
    flow_channels: int = 4
    patch_size: int = 2
    """The grid is cut into patch_size x patch_size patches before the UNet (and put back
    after): 2 runs the UNet on an 8x8 grid for a 16x16 flow grid, 4x cheaper on a CPU."""
    frame_patch: int = 1
    """Consecutive frames grouped into one before the UNet (and put back after), as a video
    transformer's tubelets: 2 runs the UNet on 8 frame pairs of a 16-frame clip, about half
    the work per step; the motion modules then attend over the pairs. 1 = every frame.
    Runs saved before the field existed have 1."""
    channels: tuple[int, ...] = (32, 64)
    """Feature width at each resolution level (level i has grid / 2**i cells per side)."""
    num_res_blocks: int = 1
    """ResNet blocks per level on the way down (the way up has one more, as in SD)."""
    attention_levels: tuple[bool, ...] = (False, True)
    """Levels with spatial self-attention and cross-attention to the conditioning tokens."""
    motion_levels: tuple[bool, ...] = ()
    """Levels with AnimateDiff motion modules after each block; empty = every level."""
    num_heads: int = 4
    head_dim: int = 0
    """0 = channels // num_heads at each level."""
    ff_mult: int = 1
    """Hidden width multiplier of the transformer feed-forward layers (GEGLU)."""
    transformer_depth: int = 1
    """Transformer blocks in each spatial transformer."""
    motion_depth: int = 1
    """Temporal transformer blocks in each motion module."""
    motion_max_frames: int = 32
    """Longest clip the motion modules' sinusoidal frame encoding is laid out for."""
    groups: int = 8
    """Group-norm groups (must divide every width)."""
    time_embed_mult: int = 4
    dropout: float = 0.0
    text_dim: int = 384
    """Width of the frozen text encoder's token embeddings (384 all-MiniLM-L6-v2, 512 CLIP
    ViT-B/32, 768 CLIP ViT-L/14)."""
    cond_dim: int = 64
    """Width of the cross-attention context tokens (text and observation)."""
    obs_size: int = 64
    """The first RGB-D frame is resized to obs_size x obs_size before the observation encoder."""
    obs_channels: tuple[int, ...] = (16, 32, 32, 64)
    """Widths of the stride-2 convolutions of the observation encoder (tokens on an
    obs_size / 2**len side grid)."""
    obs_max_depth: float = 5.0
    """Depth beyond this (meters; the kitchen's background renders at the far plane, 333 m) is
    clipped before the observation encoder."""
    obs_depth_scale: float = 1.0
    """Depth in meters is divided by this before the observation encoder."""
    point_freqs: int = 6
    """Octaves of the sinusoidal encoding of the initial points' (u, v, depth)."""
    grid_embedding: bool = False
    """Add a learned embedding per (patchified) grid cell to the initial points' features.
    Cell ``(i, j)`` holds the point with the i-th first-frame image row band and j-th column
    rank (:func:`jflow.flow.grid.grid_order`), so the embedding tells the network where on
    the object a cell lies, which convolutions with zero padding only see near the border.
    Runs saved before the field existed have none."""
    objective: ObjectiveConfig = ObjectiveConfig()

    def __post_init__(self) -> None:
        levels = len(self.channels)
        if levels < 1 or min(self.channels) < 1:
            raise ConfigError(f"channels must be a non-empty tuple of widths, got {self.channels}")
        if len(self.attention_levels) != levels:
            raise ConfigError(
                f"attention_levels needs one entry per level ({levels}), got {self.attention_levels}"
            )
        if self.motion_levels and len(self.motion_levels) != levels:
            raise ConfigError(
                f"motion_levels needs one entry per level ({levels}), got {self.motion_levels}"
            )
        gh, gw = self.grid_hw
        if self.patch_size < 1:
            raise ConfigError(f"patch_size must be >= 1, got {self.patch_size}")
        factor = self.patch_size * 2 ** (levels - 1)
        if gh % factor or gw % factor:
            raise ConfigError(
                f"grid {self.grid_hw} must be divisible by patch_size * 2**(levels-1) = {factor}"
            )
        if self.frame_patch < 1 or self.num_frames % self.frame_patch:
            raise ConfigError(
                f"frame_patch must be >= 1 and divide num_frames={self.num_frames}, got "
                f"{self.frame_patch}"
            )
        if self.ff_mult < 1:
            raise ConfigError(f"ff_mult must be >= 1, got {self.ff_mult}")
        for c in (*self.channels, *self.obs_channels):
            if c % self.groups:
                raise ConfigError(f"groups={self.groups} must divide every width, not {c}")
        if self.head_dim == 0:
            for c in self.channels:
                if c % self.num_heads:
                    raise ConfigError(f"num_heads={self.num_heads} must divide width {c}")
        if self.num_frames < 1 or self.num_frames > self.motion_max_frames:
            raise ConfigError(
                f"num_frames must be in [1, motion_max_frames={self.motion_max_frames}], got "
                f"{self.num_frames}"
            )
        if self.num_res_blocks < 1 or self.transformer_depth < 1 or self.motion_depth < 1:
            raise ConfigError("num_res_blocks, transformer_depth and motion_depth must be >= 1")
        if not self.obs_max_depth > 0:
            raise ConfigError(f"obs_max_depth must be > 0 meters, got {self.obs_max_depth}")
        if not self.obs_channels or self.obs_size % (2 ** len(self.obs_channels)):
            raise ConfigError(f"obs_size {self.obs_size} must be divisible by 2**len(obs_channels)")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.flow_channels != 4:
            raise ConfigError("flow_channels must be 4 (u, v, depth, visibility)")

    # ------------------------------------------------------------------ presets

    @staticmethod
    def default(**overrides: Any) -> FlowModelConfig:
        """Trains on a 2-core CPU: 16 frames of a 16x16 grid in 2x2 patches and frame pairs,
        widths 32/64 (1.14 M parameters), flow matching on the displacement scaled by 6 with
        training times shifted towards noise (k = 3), sampled with 2 Euler steps: the settings
        of the 30-minute CPU runs in docs/training.md. The bare dataclass defaults
        (``FlowModelConfig()``) keep the values of older runs (one frame per step, scale 2,
        uniform times, 10 steps), so that saved configs read back as they were trained."""
        base = FlowModelConfig(
            frame_patch=2,
            objective=ObjectiveConfig(time_shift=3.0, displacement_scale=6.0, default_steps=2),
        )
        return dataclasses.replace(base, **overrides)

    @staticmethod
    def tiny(**overrides: Any) -> FlowModelConfig:
        """For unit tests: 4 frames of an 8x8 grid in 2x2 patches, two levels of width 16/32."""
        base = FlowModelConfig(
            num_frames=4,
            grid_hw=(8, 8),
            patch_size=2,
            channels=(16, 32),
            attention_levels=(False, True),
            num_heads=2,
            groups=4,
            cond_dim=32,
            obs_size=32,
            obs_channels=(8, 16),
            point_freqs=4,
            objective=ObjectiveConfig(num_train_steps=100),
        )
        return dataclasses.replace(base, **overrides)

    @staticmethod
    def large(**overrides: Any) -> FlowModelConfig:
        """The 3DFlowAction scale (AnimateDiff on SD-1.5 widths) for GPU/TPU.

        Four levels of 320/640/1280/1280 with two ResNet blocks each, spatial and cross
        attention on the three lower levels, motion modules everywhere, 8 heads, CLIP
        ViT-L/14 text tokens (768); about 1.73 G parameters (docs/model.md).
        """
        base = FlowModelConfig(
            patch_size=1,
            ff_mult=4,
            channels=(320, 640, 1280, 1280),
            num_res_blocks=2,
            attention_levels=(False, True, True, True),
            num_heads=8,
            motion_depth=2,
            groups=32,
            text_dim=768,
            cond_dim=768,
            obs_size=224,
            obs_channels=(64, 128, 256, 512),
            point_freqs=10,
        )
        return dataclasses.replace(base, **overrides)

    # ------------------------------------------------------------------ helpers

    @property
    def num_levels(self) -> int:
        return len(self.channels)

    def motion_at(self, level: int) -> bool:
        return True if not self.motion_levels else bool(self.motion_levels[level])

    @property
    def time_embed_dim(self) -> int:
        return self.channels[0] * self.time_embed_mult

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["objective"] = self.objective.to_dict()
        return data

    @staticmethod
    def from_dict(data: dict[str, Any]) -> FlowModelConfig:
        data = dict(data)  # fields added later and missing here take their (old) defaults
        if "objective" in data and isinstance(data["objective"], dict):
            data["objective"] = ObjectiveConfig.from_dict(data["objective"])
        return _from_dict(FlowModelConfig, data)


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}.from_dict needs a dict, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{cls.__name__} has no field(s) {', '.join(unknown)}; known: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name) if name != "objective" else None
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def config_diff(saved: dict[str, Any] | FlowModelConfig, current: FlowModelConfig) -> list[str]:
    """The fields that differ between a saved config and ``current``, as readable lines.

    ``["channels: saved (32, 64) != current (32, 64, 64)", ...]``; empty when they match.
    """
    saved_d = saved.to_dict() if isinstance(saved, FlowModelConfig) else dict(saved)
    cur_d = current.to_dict()
    lines = []
    for key in sorted(set(saved_d) | set(cur_d)):
        a, b = saved_d.get(key, "<missing>"), cur_d.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            for sub in sorted(set(a) | set(b)):
                sa, sb = a.get(sub, "<missing>"), b.get(sub, "<missing>")
                if _norm(sa) != _norm(sb):
                    lines.append(f"{key}.{sub}: saved {sa!r} != current {sb!r}")
        elif _norm(a) != _norm(b):
            lines.append(f"{key}: saved {a!r} != current {b!r}")
    return lines


def _norm(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_norm(x) for x in v)
    return v
