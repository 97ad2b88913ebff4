"""PIPs-style refinement: the depthwise temporal-convolution MLP-mixer of TAPIR.

Each of the 12 blocks is ``x += DWConv(gelu(DWConv4x(LN(x))))`` summed over the 4 channel
copies, then ``x += Linear(gelu(Linear(LN(x))))``; the temporal convolutions run along
the frame axis, one sequence per tracked point. In causal mode the convolutions see only
the current and the previous ``kernel - 1`` frames; the state that carries those frames
from one call to the next is :class:`MixerState`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jflow.tracking.tapir.layers import LayerNorm, gelu

# Per block: (normalised input of the first temporal conv, gelu output feeding the second),
# each [batch, kernel - 1, channels].
BlockState = tuple[jax.Array, jax.Array]
MixerState = tuple[BlockState, ...]


class MixerBlock(nnx.Module):
    def __init__(self, dim: int, kernel: int, causal: bool, rngs: nnx.Rngs):
        self.kernel = kernel
        self.causal = causal
        padding = "VALID" if causal else "SAME"
        self.layer_norm = LayerNorm(dim)
        # Haiku DepthwiseConv1D layouts: w [k, 1, channels * multiplier].
        self.mlp1_up = nnx.Conv(
            dim, 4 * dim, (kernel,), padding=padding, feature_group_count=dim, rngs=rngs
        )
        self.mlp1_up_1 = nnx.Conv(
            4 * dim, 4 * dim, (kernel,), padding=padding, feature_group_count=4 * dim, rngs=rngs
        )
        self.layer_norm_1 = LayerNorm(dim)
        self.mlp2_up = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.mlp2_down = nnx.Linear(4 * dim, dim, rngs=rngs)

    def zero_state(self, batch: int, dtype=jnp.float32) -> BlockState:
        dim = self.layer_norm.scale.shape[0]
        k = self.kernel - 1
        return (jnp.zeros((batch, k, dim), dtype), jnp.zeros((batch, k, 4 * dim), dtype))

    def __call__(
        self, x: jax.Array, state: BlockState | None = None
    ) -> tuple[jax.Array, BlockState | None]:
        """``x [B, T, C]`` -> ``[B, T, C]``; ``state`` is used (and returned) in causal mode."""
        skip = x
        h = self.layer_norm(x)
        new_state = None
        if self.causal:
            if state is None:
                state = self.zero_state(x.shape[0], x.dtype)
            k = self.kernel - 1
            h = jnp.concatenate([state[0], h], axis=1)
            s0 = h[:, h.shape[1] - k :]
            h = gelu(self.mlp1_up(h))
            h = jnp.concatenate([state[1], h], axis=1)
            s1 = h[:, h.shape[1] - k :]
            h = self.mlp1_up_1(h)
            new_state = (s0, s1)
        else:
            h = self.mlp1_up_1(gelu(self.mlp1_up(h)))
        # Output channel 4c + m is copy m of channel c: sum the four copies.
        h = h.reshape(h.shape[:-1] + (h.shape[-1] // 4, 4)).sum(-1)
        x = h + skip
        skip = x
        x = self.mlp2_down(gelu(self.mlp2_up(self.layer_norm_1(x)))) + skip
        return x, new_state


class PipsMixer(nnx.Module):
    """``Linear -> blocks -> LayerNorm -> Linear`` over ``[B, T, C]`` sequences."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int,
        num_blocks: int,
        kernel: int,
        causal: bool,
        rngs: nnx.Rngs,
    ):
        self.causal = causal
        self.linear = nnx.Linear(in_dim, hidden, rngs=rngs)
        self.blocks = nnx.List(
            [MixerBlock(hidden, kernel, causal, rngs) for _ in range(num_blocks)]
        )
        self.layer_norm = LayerNorm(hidden)
        self.linear_1 = nnx.Linear(hidden, out_dim, rngs=rngs)

    def zero_state(self, batch: int, dtype=jnp.float32) -> MixerState:
        return tuple(b.zero_state(batch, dtype) for b in self.blocks)

    def __call__(
        self, x: jax.Array, state: MixerState | None = None
    ) -> tuple[jax.Array, MixerState | None]:
        x = self.linear(x)
        new_states = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, None if state is None else state[i])
            new_states.append(s)
        x = self.linear_1(self.layer_norm(x))
        return x, (tuple(new_states) if self.causal else None)
