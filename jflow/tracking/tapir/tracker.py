"""TAPIR behind jflow's :class:`~jflow.tracking.interface.PointTracker` interface.

Coordinates. jflow and TAPIR both use the pixel-corner convention: ``(0, 0)`` is the
top-left corner of the top-left pixel and the centre of pixel ``(i, j)`` is
``(j + 0.5, i + 0.5)`` as (x, y). TAPIR's own conversions between resolutions
(``convert_grid_coordinates``) scale without an offset, and its sampling reads cell
``(i, j)`` at ``(i + 0.5, j + 0.5)``, so the corners are aligned and converting between the
video (H x W) and the model's resolution (h x w) is a pure scaling:
``x_model = x * w / W``, ``y_model = y * h / H``, and back. Query frames are unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Float, UInt8

from jflow.errors import ConfigError, ShapeError
from jflow.tracking.interface import TrackResult, check_track_inputs
from jflow.tracking.tapir.checkpoint import infer_variant, load_tapir_checkpoint, params_to_model
from jflow.tracking.tapir.config import variant_config
from jflow.tracking.tapir.layers import resize_frames
from jflow.tracking.tapir.model import (
    TAPIR,
    FeatureGrids,
    QueryFeatures,
    preprocess_frames,
    summarize,
)


# Jitted pieces, keyed on the model's structure (graphdef) and resolution, so that trackers
# of equally shaped models share compiled code.
@partial(jax.jit, static_argnums=(0, 1))
def _features(graphdef, resolution, state, frames_u8):
    """uint8 ``[T, H, W, 3]`` -> stride-4 and stride-8 grids ``[1, T, ...]`` at ``resolution``."""
    video = resize_frames(preprocess_frames(frames_u8), resolution)[None]
    grids = nnx.merge(graphdef, state).get_feature_grids(video, [resolution])
    return grids.hires[0], grids.lowres[0]


@partial(jax.jit, static_argnums=(0, 1))
def _estimate(graphdef, resolution, state, hires, lowres, queries):
    """Offline final outputs for ``queries [n, 3]`` in model pixels."""
    model = nnx.merge(graphdef, state)
    grids = FeatureGrids((hires, hires), (lowres, lowres))
    q = queries[None]
    qf = model.get_query_features(grids, q, resolution)
    traj = model.estimate_trajectories(grids, qf, resolution, q)
    out = summarize(traj, model.config.num_pips_iter)
    return out["tracks"][0], out["occlusion"][0], out["expected_dist"][0]


@partial(jax.jit, static_argnums=(0, 1))
def _query_features(graphdef, resolution, state, hires, lowres, yx):
    """Features of points ``yx [N, 2]`` (model pixels) in a one-frame grid."""
    model = nnx.merge(graphdef, state)
    grids = FeatureGrids((hires,), (lowres,))
    q = jnp.concatenate([jnp.zeros_like(yx[:, :1]), yx], axis=-1)[None]
    qf = model.get_query_features(grids, q, resolution)
    return qf.hires[0], qf.lowres[0]


@partial(jax.jit, static_argnums=(0, 1))
def _online_step(graphdef, resolution, state, hires, lowres, q_hires, q_lowres, causal_state):
    """One frame of causal tracking: final outputs ``[N]`` and the next state."""
    model = nnx.merge(graphdef, state)
    grids = FeatureGrids((hires, hires), (lowres, lowres))
    qf = QueryFeatures((q_hires, q_hires), (q_lowres, q_lowres))
    traj = model.estimate_trajectories(grids, qf, resolution, None, causal_state)
    # One refinement resolution: the final output is the last iterate.
    return (
        traj["tracks"][-1][0, :, 0],
        traj["occlusion"][-1][0, :, 0],
        traj["expected_dist"][-1][0, :, 0],
        traj["causal_state"],
    )


def _as_model(model_or_params, **config_overrides) -> TAPIR:
    if isinstance(model_or_params, TAPIR):
        if config_overrides:
            raise ConfigError("config overrides apply only when loading a checkpoint")
        return model_or_params
    if isinstance(model_or_params, (str, os.PathLike)):
        return load_tapir_checkpoint(model_or_params, **config_overrides)[1]
    if isinstance(model_or_params, Mapping):
        params = model_or_params.get("params", model_or_params)
        variant = config_overrides.pop("variant", None) or infer_variant(params)
        return params_to_model(params, variant_config(variant, **config_overrides), variant)
    raise ConfigError(
        f"TapirTracker needs a TAPIR model, a checkpoint path or a Haiku params dict, got {type(model_or_params).__name__}"
    )


class TapirTracker:
    """Point tracking with TAPIR, BootsTAPIR or causal TAPIR.

    ``model_or_params``: a :class:`TAPIR`, the path of an official ``.npy`` checkpoint, or
    its ``params`` dict. The video is resized (bilinear, antialiased) to ``resolution``
    (height, width; multiples of 8), which is both the initialisation and the (single)
    refinement resolution, as in the reference demos. Queries are processed
    ``query_chunk_size`` at a time (the last chunk is padded, so one compilation serves
    every chunk; fewer queries than a chunk are padded to the next power of two) and frames
    through the backbone ``frame_chunk_size`` at a time.

    ``track`` returns the model's final output; ``occlusion`` is ``sigmoid(occlusion
    logit)``, ``uncertainty`` is ``sigmoid(expected-distance logit)`` and ``visible`` is
    ``(1 - occlusion) * (1 - uncertainty) > 0.5``.
    """

    def __init__(
        self,
        model_or_params,
        resolution: tuple[int, int] = (256, 256),
        query_chunk_size: int = 64,
        frame_chunk_size: int = 16,
        **config_overrides,
    ):
        self.model = _as_model(model_or_params, **config_overrides)
        self.resolution = (int(resolution[0]), int(resolution[1]))
        if self.resolution[0] % 8 or self.resolution[1] % 8 or min(self.resolution) <= 0:
            raise ConfigError(f"resolution must be positive multiples of 8, got {resolution}")
        if query_chunk_size < 1 or frame_chunk_size < 1:
            raise ConfigError("query_chunk_size and frame_chunk_size must be >= 1")
        self.query_chunk_size = int(query_chunk_size)
        self.frame_chunk_size = int(frame_chunk_size)
        self._graphdef, self._state = nnx.split(self.model)

    def _call(self, fn, *args):
        return fn(self._graphdef, self.resolution, self._state, *args)

    @property
    def causal(self) -> bool:
        return self.model.config.use_causal_conv

    # -------------------------------------------------------------------- API
    def _to_model(self, queries: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        scale = np.array([1.0, self.resolution[0] / hw[0], self.resolution[1] / hw[1]], np.float32)
        return queries * scale

    def _to_video(self, tracks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        return tracks * np.array(
            [hw[1] / self.resolution[1], hw[0] / self.resolution[0]], np.float32
        )

    def _result(self, tracks, occ_logits, expd_logits, hw) -> TrackResult:
        occ = 1.0 / (1.0 + np.exp(-occ_logits.astype(np.float64)))
        unc = 1.0 / (1.0 + np.exp(-expd_logits.astype(np.float64)))
        visible = (1.0 - occ) * (1.0 - unc) > 0.5
        return TrackResult(
            tracks=self._to_video(tracks, hw).astype(np.float32),
            visible=visible,
            occlusion=occ.astype(np.float32),
            uncertainty=unc.astype(np.float32),
        )

    def feature_grids(self, video: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """Stride-4 and stride-8 features ``[1, T, ...]`` of a uint8 video, in frame chunks."""
        t = video.shape[0]
        c = min(self.frame_chunk_size, t)
        parts = []
        for i in range(0, t, c):
            chunk = video[i : i + c]
            valid = chunk.shape[0]
            if valid < c:  # pad the last chunk so that one compilation serves every chunk
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], c - valid, axis=0)])
            hi, lo = self._call(_features, jnp.asarray(chunk))
            parts.append((hi[:, :valid], lo[:, :valid]))
        return (
            jnp.concatenate([p[0] for p in parts], axis=1),
            jnp.concatenate([p[1] for p in parts], axis=1),
        )

    def track(
        self, video: UInt8[np.ndarray, "T H W 3"], queries: Float[np.ndarray, "N 3"]
    ) -> TrackResult:
        """Track ``queries [N, 3]`` (t, y, x pixels) through ``video [T, H, W, 3]`` uint8.

        Offline: every frame informs every estimate (for a causal model, only the earlier
        ones inform the refinement). Returns tracks ``[N, T, 2]`` as (x, y) pixels.
        """
        video, queries = check_track_inputs(video, queries)
        hw = video.shape[1:3]
        t = video.shape[0]
        n = queries.shape[0]
        if n == 0:
            z = np.zeros((0, t), np.float32)
            return TrackResult(np.zeros((0, t, 2), np.float32), np.zeros((0, t), bool), z, z)
        hires, lowres = self.feature_grids(video)
        q = self._to_model(queries, hw)
        # Fewer queries than a chunk: pad to the next power of two, so that videos with
        # different numbers of queries share a few compilations (at most 2x padding).
        c = min(self.query_chunk_size, 1 << (n - 1).bit_length())
        tracks, occs, expds = [], [], []
        for start in range(0, n, c):
            chunk = q[start : start + c]
            valid = chunk.shape[0]
            if valid < c:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], c - valid, axis=0)])
            tr, oc, ed = self._call(_estimate, hires, lowres, jnp.asarray(chunk))
            tracks.append(np.asarray(tr)[:valid])
            occs.append(np.asarray(oc)[:valid])
            expds.append(np.asarray(ed)[:valid])
        return self._result(np.concatenate(tracks), np.concatenate(occs), np.concatenate(expds), hw)

    def track_online(
        self,
        frames: Iterable[UInt8[np.ndarray, "H W 3"]] | UInt8[np.ndarray, "T H W 3"],
        queries: Float[np.ndarray, "N 3"],
        num_frames: int | None = None,
    ) -> TrackResult:
        """Causal tracking, one frame at a time, with a carried state (causal models only).

        ``frames`` yields uint8 ``[H, W, 3]`` frames (or is a ``[T, H, W, 3]`` video). A query
        starts at its frame: its features are read from that frame and its temporal state
        starts from zeros, so for queries on frame 0 the result equals the causal model run
        on the whole clip without pinning the queries (``TAPIR(..., pin_queries=False)``).
        Before its query frame a point is reported at its query position, occluded, with
        uncertainty 1. Nothing looks ahead: the estimate for frame ``t`` depends on frames
        ``<= t`` only.
        """
        if not self.causal:
            raise ConfigError(
                "track_online needs a causal model (use_causal_conv=True, e.g. causal_tapir)"
            )
        queries = np.asarray(queries, np.float32)
        if queries.ndim != 2 or queries.shape[1] != 3:
            raise ShapeError(f"queries must be [N, 3] as (t, y, x), got shape {queries.shape}")
        n = queries.shape[0]
        starts = np.round(queries[:, 0]).astype(int)
        q_hires = q_lowres = None
        causal_state = None
        started = np.zeros(n, bool)
        out_tracks, out_occ, out_expd = [], [], []
        hw = None
        q_model = None
        for t, frame in enumerate(frames):
            frame = np.asarray(frame)
            if hw is None:
                hw = frame.shape[:2]
                if frame.ndim == 3 and n:
                    # Validate against a virtual clip long enough for every query frame.
                    span = max(int(queries[:, 0].max()) + 1, 1) if np.all(queries[:, 0] >= 0) else 1
                    check_track_inputs(np.broadcast_to(frame, (span,) + frame.shape), queries)
                q_model = self._to_model(queries, hw)
            if frame.shape[:2] != hw or frame.ndim != 3 or frame.dtype != np.uint8:
                raise ShapeError(
                    f"frame {t} must be uint8 [{hw[0]}, {hw[1]}, 3], got {frame.dtype} {frame.shape}"
                )
            hires, lowres = self._call(_features, jnp.asarray(frame[None]))
            if causal_state is None:
                causal_state = self.model.initial_causal_state(1, n)
                q_hires = jnp.zeros((1, n, hires.shape[-1]), jnp.float32)
                q_lowres = jnp.zeros((1, n, lowres.shape[-1]), jnp.float32)
            new = starts == t
            if np.any(new):
                qh, ql = self._call(_query_features, hires, lowres, jnp.asarray(q_model[:, 1:]))
                sel = jnp.asarray(new)
                q_hires = jnp.where(sel[None, :, None], qh, q_hires)
                q_lowres = jnp.where(sel[None, :, None], ql, q_lowres)
                causal_state = jax.tree.map(
                    lambda s, m=sel: jnp.where(m.reshape((1, n) + (1,) * (s.ndim - 2)), 0.0, s),
                    causal_state,
                )
                started |= new
            tr, oc, ed, causal_state = self._call(
                _online_step, hires, lowres, q_hires, q_lowres, causal_state
            )
            tr, oc, ed = np.asarray(tr), np.asarray(oc), np.asarray(ed)
            waiting = ~started
            tr = np.where(waiting[:, None], q_model[:, 2:0:-1], tr)
            oc = np.where(waiting, np.inf, oc)
            ed = np.where(waiting, np.inf, ed)
            out_tracks.append(tr)
            out_occ.append(oc)
            out_expd.append(ed)
        if hw is None:
            raise ShapeError("track_online got no frames")
        if num_frames is not None and len(out_tracks) != num_frames:
            raise ShapeError(f"expected {num_frames} frames, got {len(out_tracks)}")
        if np.any(starts >= len(out_tracks)) or np.any(starts < 0):
            raise ShapeError(f"query frame indices must be in [0, {len(out_tracks)})")
        return self._result(
            np.stack(out_tracks, axis=1), np.stack(out_occ, axis=1), np.stack(out_expd, axis=1), hw
        )
