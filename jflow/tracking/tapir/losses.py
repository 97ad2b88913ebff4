"""TAPIR's training losses (as in TAP-Net / TAPIR training code).

For each iterate (the initialisation, every refinement iterate but the last, and the final
output) the loss adds

* ``position``: Huber loss (delta 4 px) on the Euclidean error of visible points, with
  positions rescaled to a 256x256 frame, times ``position_loss_weight`` (0.05);
* ``occlusion``: sigmoid cross-entropy of the occlusion logit against the true flag;
* ``expected_dist``: sigmoid cross-entropy of the expected-distance logit against
  "the (gradient-stopped) prediction is more than 6 px (at 256x256) from the truth", on
  visible points.

Each term is a mean over batch, points and frames.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

LOSS_FRAME = (256, 256)
"""Positions are compared at this (height, width), whatever the video's size."""


def huber_loss(
    tracks: Float[Array, "*S 2"],
    target: Float[Array, "*S 2"],
    occluded: Float[Array, "*S"],
    delta: float = 4.0,
) -> Float[Array, "*S"]:
    """Per-point Huber loss on the distance, zero where ``occluded``; shape ``[...]``."""
    distsqr = jnp.sum(jnp.square(tracks - target), axis=-1)
    dist = jnp.sqrt(distsqr + 1e-12)
    loss = jnp.where(dist < delta, distsqr / 2, delta * (dist - delta / 2))
    return loss * (1.0 - occluded)


def expected_dist_loss(
    tracks: Float[Array, "*S 2"],
    expected_dist: Float[Array, "*S"],
    target: Float[Array, "*S 2"],
    occluded: Float[Array, "*S"],
    threshold: float,
) -> Float[Array, "*S"]:
    """Cross-entropy of "error > threshold" against the expected-distance logit."""
    err = jnp.sum(jnp.square(jax.lax.stop_gradient(tracks) - target), axis=-1)
    far = (err > threshold**2).astype(expected_dist.dtype)
    return optax.sigmoid_binary_cross_entropy(expected_dist, far) * (1.0 - occluded)


def tapnet_loss(
    tracks: Float[Array, "B N T 2"],
    occlusion: Float[Array, "B N T"],
    target_points: Float[Array, "B N T 2"],
    occluded: Array,
    video_hw: tuple[int, int],
    expected_dist: Float[Array, "B N T"] | None = None,
    mask: Array | None = None,
    position_loss_weight: float = 0.05,
    expected_dist_thresh: float = 6.0,
    huber_delta: float = 4.0,
) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, ""]]:
    """(position, occlusion, expected-distance) losses of one iterate.

    ``tracks``/``target_points`` ``[B, N, T, 2]`` (x, y) in pixels of a ``video_hw`` video;
    ``occlusion``/``expected_dist`` logits and ``occluded`` flags ``[B, N, T]``; ``mask``
    (``[B, N, T]``, 1 = counts) weights every term.
    """
    occluded = occluded.astype(occlusion.dtype)
    m = 1.0 if mask is None else mask.astype(occlusion.dtype)
    scale = jnp.array([LOSS_FRAME[1] / video_hw[1], LOSS_FRAME[0] / video_hw[0]], tracks.dtype)
    pts = tracks * scale
    tgt = target_points * scale
    position = jnp.mean(huber_loss(pts, tgt, occluded, huber_delta) * m) * position_loss_weight
    if expected_dist is None:
        prob = jnp.zeros((), occlusion.dtype)
    else:
        prob = jnp.mean(
            expected_dist_loss(pts, expected_dist, tgt, occluded, expected_dist_thresh) * m
        )
    occ = jnp.mean(optax.sigmoid_binary_cross_entropy(occlusion, occluded) * m)
    return position, occ, prob


def tapir_loss(
    outputs: dict[str, Any],
    target_points: Float[Array, "B N T 2"],
    occluded: Array,
    video_hw: tuple[int, int],
    mask: Array | None = None,
    **kwargs,
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """Total loss over the final output and every ``unrefined_*`` iterate of
    :meth:`TAPIR.__call__`, with the per-term scalars of the final output."""
    pos, occ, prob = tapnet_loss(
        outputs["tracks"],
        outputs["occlusion"],
        target_points,
        occluded,
        video_hw,
        outputs.get("expected_dist"),
        mask,
        **kwargs,
    )
    total = pos + occ + prob
    scalars = {"position_loss": pos, "occlusion_loss": occ, "expected_dist_loss": prob}
    for i, (tr, oc, ed) in enumerate(
        zip(
            outputs["unrefined_tracks"],
            outputs["unrefined_occlusion"],
            outputs["unrefined_expected_dist"],
            strict=True,
        )
    ):
        p, o, e = tapnet_loss(tr, oc, target_points, occluded, video_hw, ed, mask, **kwargs)
        total = total + p + o + e
        scalars[f"position_loss_{i}"] = p
    scalars["loss"] = total
    return total, scalars
