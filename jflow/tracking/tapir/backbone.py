"""TAPIR's per-frame feature extractor: a ResNet-v2 with instance norm.

A 7x7 stride-2 convolution, then four groups of pre-activation residual blocks with strides
(1, 2, 2, 1): the output of group 1 (stride 4, 128 channels) and of group 3 (stride 8,
256 channels) are the two feature maps TAPIR uses, each L2-normalised per position.
BootsTAPIR adds :class:`ExtraConvs` on the stride-8 map before the normalisation.
"""

from __future__ import annotations

import jax
from flax import nnx

from jflow.errors import ConfigError
from jflow.tracking.tapir.config import TapirConfig
from jflow.tracking.tapir.layers import InstanceNorm, LayerNorm, gelu, l2_normalize


class BlockV2(nnx.Module):
    """Pre-activation block: (norm, relu, conv) twice, plus a 1x1 projection shortcut.

    The shortcut projects the block input after the first norm and relu, as Haiku's
    ``BlockV2`` does.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, use_projection: bool, rngs: nnx.Rngs):
        self.instancenorm_0 = InstanceNorm(in_ch)
        self.conv_0 = nnx.Conv(
            in_ch, out_ch, (3, 3), strides=stride, padding="SAME", use_bias=False, rngs=rngs
        )
        self.instancenorm_1 = InstanceNorm(out_ch)
        self.conv_1 = nnx.Conv(
            out_ch, out_ch, (3, 3), strides=1, padding="SAME", use_bias=False, rngs=rngs
        )
        self.shortcut_conv = (
            nnx.Conv(
                in_ch, out_ch, (1, 1), strides=stride, padding="SAME", use_bias=False, rngs=rngs
            )
            if use_projection
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x
        x = jax.nn.relu(self.instancenorm_0(x))
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_conv(x)
        x = self.conv_0(x)
        x = jax.nn.relu(self.instancenorm_1(x))
        x = self.conv_1(x)
        return x + shortcut


class ResNetV2(nnx.Module):
    """The backbone; ``__call__`` maps ``[B, H, W, 3]`` in [-1, 1] to (stride-4, stride-8) maps."""

    STRIDES = (1, 2, 2, 1)

    def __init__(self, config: TapirConfig, rngs: nnx.Rngs):
        c0 = config.initial_conv_channels
        self.initial_conv = nnx.Conv(
            3, c0, (7, 7), strides=2, padding="SAME", use_bias=False, rngs=rngs
        )
        groups = []
        in_ch = c0
        for num, ch, stride in zip(
            config.blocks_per_group, config.channels_per_group, self.STRIDES, strict=True
        ):
            blocks = []
            for b in range(num):
                blocks.append(BlockV2(in_ch, ch, stride if b == 0 else 1, b == 0, rngs))
                in_ch = ch
            groups.append(nnx.List(blocks))
        self.block_groups = nnx.List(groups)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = self.initial_conv(x)
        outs = []
        for group in self.block_groups:
            for block in group:
                x = block(x)
            outs.append(x)
        return outs[1], outs[3]


class ExtraConvs(nnx.Module):
    """BootsTAPIR's layers on the stride-8 map: ``x = LN(x); x = x + conv(gelu(conv(x)))``.

    Note the residual is added to the *normalised* features, not to the layer's input.
    """

    def __init__(self, dim: int, num_layers: int, multiplier: int, rngs: nnx.Rngs):
        self.layer_norms = nnx.List([LayerNorm(dim, use_offset=True) for _ in range(num_layers)])
        self.up = nnx.List(
            [
                nnx.Conv(dim, dim * multiplier, (3, 3), padding="SAME", rngs=rngs)
                for _ in range(num_layers)
            ]
        )
        # The residual branch starts at zero, as in the reference initialisation.
        self.down = nnx.List(
            [
                nnx.Conv(
                    dim * multiplier,
                    dim,
                    (3, 3),
                    padding="SAME",
                    kernel_init=nnx.initializers.zeros_init(),
                    rngs=rngs,
                )
                for _ in range(num_layers)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for norm, up, down in zip(self.layer_norms, self.up, self.down, strict=True):
            # The skip connection carries the normalised x, as in the reference.
            x = norm(x)
            x = x + down(gelu(up(x)))
        return x


class FeatureExtractor(nnx.Module):
    """Backbone (+ BootsTAPIR's extra convolutions) with L2-normalised outputs."""

    def __init__(self, config: TapirConfig, rngs: nnx.Rngs):
        self.resnet = ResNetV2(config, rngs)
        self.extra_convs = (
            ExtraConvs(
                config.lowres_dim, config.extra_conv_layers, config.extra_conv_multiplier, rngs
            )
            if config.extra_convs
            else None
        )

    def __call__(self, frames: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``frames [..., H, W, 3]`` in [-1, 1] -> (hires ``[..., H/4, W/4, 128]``,
        lowres ``[..., H/8, W/8, 256]``), both unit-norm per position."""
        lead = frames.shape[:-3]
        flat = frames.reshape((-1,) + frames.shape[-3:])
        hires, lowres = self.resnet(flat)
        if self.extra_convs is not None:
            lowres = self.extra_convs(lowres)
        hires = l2_normalize(hires).reshape(lead + hires.shape[1:])
        lowres = l2_normalize(lowres).reshape(lead + lowres.shape[1:])
        return hires, lowres


def stride_check(hw: tuple[int, int]) -> None:
    """Raise :class:`ConfigError` unless both sides are multiples of 8."""
    if hw[0] % 8 or hw[1] % 8:
        raise ConfigError(f"TAPIR resolutions must be multiples of 8, got {hw}")


__all__ = ["BlockV2", "ExtraConvs", "FeatureExtractor", "ResNetV2", "stride_check"]
