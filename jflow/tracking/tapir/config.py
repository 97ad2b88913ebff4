"""Settings of the TAPIR family and the three official variants.

The settings that change the parameter tensors (``pyramid_level``, ``extra_convs``, the
widths) can be read off a checkpoint; the others (``softmax_temperature``,
``use_causal_conv``) cannot, so each official variant fixes them here.
"""

from __future__ import annotations

import dataclasses

from jflow.errors import ConfigError, UnknownNameError


@dataclasses.dataclass(frozen=True)
class TapirConfig:
    """Architecture settings of a TAPIR model.

    The defaults are TAPIR's published settings; see :data:`VARIANTS` for BootsTAPIR and
    causal TAPIR. Tests use reduced widths and block counts to compile quickly; the
    official checkpoints only load into the full widths.
    """

    pyramid_level: int = 0
    """Extra 2x average-pooled levels of the stride-8 grid in the refinement correlations."""
    extra_convs: bool = False
    """BootsTAPIR's five residual 3x3 convolution layers on the stride-8 features."""
    softmax_temperature: float = 20.0
    """Scale of the cost-volume logits before the spatial softmax (10 for BootsTAPIR)."""
    use_causal_conv: bool = False
    """Temporal convolutions see only past frames (online / causal TAPIR)."""
    num_pips_iter: int = 4
    """Refinement iterations per refinement resolution."""
    num_mixer_blocks: int = 12
    mixer_hidden_dim: int = 512
    mixer_kernel_size: int = 3
    patch_size: int = 7
    """Side of the local correlation patch sampled around each position estimate."""
    soft_argmax_radius: float = 5.0
    """Radius, in stride-8 grid cells, of the soft-argmax window around the heatmap peak."""
    blocks_per_group: tuple[int, int, int, int] = (2, 2, 2, 2)
    channels_per_group: tuple[int, int, int, int] = (64, 128, 256, 256)
    initial_conv_channels: int = 64
    extra_conv_layers: int = 5
    extra_conv_multiplier: int = 4

    def __post_init__(self) -> None:
        if self.pyramid_level < 0:
            raise ConfigError(f"pyramid_level must be >= 0, got {self.pyramid_level}")
        if self.num_pips_iter < 1:
            raise ConfigError(f"num_pips_iter must be >= 1, got {self.num_pips_iter}")
        if self.mixer_kernel_size < 1 or self.patch_size < 1 or self.patch_size % 2 != 1:
            raise ConfigError("mixer_kernel_size must be >= 1 and patch_size odd and >= 1")
        if len(self.blocks_per_group) != 4 or len(self.channels_per_group) != 4:
            raise ConfigError("blocks_per_group and channels_per_group need 4 entries")

    @property
    def hires_dim(self) -> int:
        """Channels of the stride-4 feature map (block group 1)."""
        return self.channels_per_group[1]

    @property
    def lowres_dim(self) -> int:
        """Channels of the stride-8 feature map (block group 3)."""
        return self.channels_per_group[3]

    @property
    def num_pyramid_levels(self) -> int:
        """Correlation levels in the refinement: stride 4, stride 8, then the pooled ones."""
        return 2 + self.pyramid_level

    @property
    def mixer_input_dim(self) -> int:
        patch = self.patch_size * self.patch_size
        return 4 + self.hires_dim + self.lowres_dim + patch * self.num_pyramid_levels

    @property
    def mixer_output_dim(self) -> int:
        return 4 + self.hires_dim + self.lowres_dim

    def replace(self, **changes) -> TapirConfig:
        return dataclasses.replace(self, **changes)


VARIANTS: dict[str, TapirConfig] = {
    "tapir": TapirConfig(pyramid_level=0, extra_convs=False, softmax_temperature=20.0),
    "bootstapir": TapirConfig(pyramid_level=1, extra_convs=True, softmax_temperature=10.0),
    "causal_tapir": TapirConfig(
        pyramid_level=1, extra_convs=False, softmax_temperature=20.0, use_causal_conv=True
    ),
}
"""The official checkpoints' settings: ``tapir_checkpoint_panning.npy`` (TAPIR),
``bootstapir_checkpoint_v2.npy`` (BootsTAPIR) and ``causal_tapir_checkpoint.npy``."""


def variant_config(name: str, **overrides) -> TapirConfig:
    """The configuration of an official variant, with optional field overrides."""
    if name not in VARIANTS:
        raise UnknownNameError("TAPIR variant", name, sorted(VARIANTS))
    return VARIANTS[name].replace(**overrides) if overrides else VARIANTS[name]
