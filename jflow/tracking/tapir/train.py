"""Training and fine-tuning TAPIR on ground-truth tracks.

A batch is a dict of arrays:

* ``video`` ``[B, T, H, W, 3]``, uint8 or float in [-1, 1];
* ``query_points`` ``[B, N, 3]`` as (t, y, x) in pixels (pixel-corner convention);
* ``target_points`` ``[B, N, T, 2]`` as (x, y) in pixels;
* ``occluded`` ``[B, N, T]`` (bool or 0/1);
* optionally ``mask`` ``[B, N, T]`` (1 = counts in the loss).

:func:`batch_from_tracks` builds one from the tracker API's layout (tracks ``[N, T, 2]`` and
``visible [N, T]``), e.g. the kitchen's ground-truth tracks.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Bool, Float, UInt8

from jflow.errors import ShapeError
from jflow.tracking.tapir.losses import tapir_loss
from jflow.tracking.tapir.model import TAPIR, preprocess_frames


def batch_from_tracks(
    video: UInt8[np.ndarray, "T H W 3"],
    queries: Float[np.ndarray, "N 3"],
    tracks: Float[np.ndarray, "N T 2"],
    visible: Bool[np.ndarray, "N T"],
) -> dict[str, np.ndarray]:
    """One-clip batch from ``video [T, H, W, 3]`` uint8, ``queries [N, 3]`` (t, y, x),
    ``tracks [N, T, 2]`` (x, y) and ``visible [N, T]``."""
    video = np.asarray(video)
    queries = np.asarray(queries, np.float32)
    tracks = np.asarray(tracks, np.float32)
    visible = np.asarray(visible, bool)
    t = video.shape[0]
    n = queries.shape[0]
    if (
        video.ndim != 4
        or queries.shape != (n, 3)
        or tracks.shape != (n, t, 2)
        or visible.shape != (n, t)
    ):
        raise ShapeError(
            f"expected video [T,H,W,3], queries [N,3], tracks [N,T,2], visible [N,T]; got "
            f"{video.shape}, {queries.shape}, {tracks.shape}, {visible.shape}"
        )
    return {
        "video": video[None],
        "query_points": queries[None],
        "target_points": tracks[None],
        "occluded": ~visible[None],
    }


FREEZE_BACKBONE = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("features")))
"""Parameter filter for fine-tuning everything but the feature extractor."""


def make_optimizer(
    model: TAPIR,
    learning_rate: float | optax.Schedule = 1e-4,
    weight_decay: float = 1e-4,
    clip_norm: float | None = 1.0,
    wrt: nnx.filterlib.Filter = nnx.Param,
) -> nnx.Optimizer:
    """AdamW (b2 = 0.95 as in TAPIR's training) over the parameters ``wrt`` selects
    (all by default; :data:`FREEZE_BACKBONE` keeps the feature extractor fixed)."""
    parts = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
    tx = optax.chain(*parts, optax.adamw(learning_rate, b1=0.9, b2=0.95, weight_decay=weight_decay))
    return nnx.Optimizer(model, tx, wrt=wrt)


def _video_float(video: jax.Array) -> jax.Array:
    return preprocess_frames(video) if video.dtype == jnp.uint8 else video.astype(jnp.float32)


def loss_fn(
    model: TAPIR, batch: dict[str, Any], initial_resolution: tuple[int, int], **loss_kwargs
):
    """Forward pass and :func:`tapir_loss` on one batch; returns ``(loss, scalars)``."""
    video = _video_float(batch["video"])
    outputs = model(video, batch["query_points"], initial_resolution=initial_resolution)
    return tapir_loss(
        outputs,
        batch["target_points"],
        batch["occluded"],
        (video.shape[-3], video.shape[-2]),
        batch.get("mask"),
        **loss_kwargs,
    )


@partial(jax.jit, static_argnums=(0, 1, 2))
def _train_step(graphdef, resolution, loss_items, state, batch):
    model, optimizer = nnx.merge(graphdef, state)
    model_def, params, rest = nnx.split(model, optimizer.wrt, ...)

    def objective(p):
        return loss_fn(nnx.merge(model_def, p, rest), batch, resolution, **dict(loss_items))

    (_, scalars), grads = jax.value_and_grad(objective, has_aux=True)(params)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), scalars


def make_train_step(initial_resolution: tuple[int, int] = (256, 256), **loss_kwargs) -> Callable:
    """A jitted ``step(model, optimizer, batch) -> scalars`` that updates both in place.

    Compiled once per model structure and batch shape (shared between calls and models).
    """
    res = (int(initial_resolution[0]), int(initial_resolution[1]))
    items = tuple(sorted(loss_kwargs.items()))

    def step(model: TAPIR, optimizer: nnx.Optimizer, batch: dict[str, Any]) -> dict[str, jax.Array]:
        graphdef, state = nnx.split((model, optimizer))
        new_state, scalars = _train_step(graphdef, res, items, state, batch)
        nnx.update((model, optimizer), new_state)
        return scalars

    return step


def make_eval_loss(initial_resolution: tuple[int, int] = (256, 256), **loss_kwargs) -> Callable:
    """A jitted ``loss(model, batch) -> scalars`` without an update."""
    res = (int(initial_resolution[0]), int(initial_resolution[1]))

    @partial(jax.jit, static_argnums=0)
    def _evaluate(graphdef, state, batch):
        return loss_fn(nnx.merge(graphdef, state), batch, res, **loss_kwargs)[1]

    def evaluate(model: TAPIR, batch: dict[str, Any]) -> dict[str, jax.Array]:
        graphdef, state = nnx.split(model)
        return _evaluate(graphdef, state, batch)

    return evaluate
