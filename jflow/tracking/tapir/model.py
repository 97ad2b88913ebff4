"""TAPIR (and BootsTAPIR, causal TAPIR) as a Flax NNX module.

Pipeline, for a batch of videos ``[B, T, H, W, 3]`` in [-1, 1] and query points
``[B, N, 3]`` as ``(t, y, x)`` in pixels of that video (pixel-corner convention):

1. **Features.** The video is resized (bilinear, antialiased) to the initial resolution
   (256x256 by default) and to each refinement resolution; the ResNet-v2 gives a stride-4
   map (128 channels) and a stride-8 map (256 channels) per frame, L2-normalised.
2. **Query features** are read from the query frame by bilinear interpolation.
3. **Initialisation (TAP-Net).** The cost volume (dot products of the query's stride-8
   feature with every position of every frame) goes through two 3x3 convolutions to a
   heatmap; ``softmax(temperature * heatmap)`` and a soft argmax within 5 cells of the peak
   give the position; a strided convolution, a spatial mean and two linear layers give the
   occlusion and expected-distance logits. On its own frame a query is placed exactly.
4. **Refinement (PIPs).** ``num_pips_iter`` times per refinement resolution, 7x7 patches of
   correlations around the current estimate at every pyramid level (stride 4, stride 8, and
   ``pyramid_level`` pooled levels) are concatenated with the occlusion and distance logits
   and a running per-frame feature, and the mixer predicts updates of all four.
   Occlusion, distance and features restart from the initialisation at each new resolution;
   positions carry over. The output averages the last iterate of every resolution.

Positions inside the model are kept at the initial resolution and converted to the video's
pixels on output, by scaling alone (pixel corners aligned): ``x_video = x * W / W_init``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Shaped

from jflow.tracking.tapir.backbone import FeatureExtractor, stride_check
from jflow.tracking.tapir.config import TapirConfig
from jflow.tracking.tapir.layers import avg_pool_2x, bilinear_sample, resize_frames, soft_argmax
from jflow.tracking.tapir.refinement import MixerState, PipsMixer

CausalState = tuple[MixerState, ...]
"""One :data:`MixerState` per refinement iteration; arrays are ``[B, N, kernel - 1, C]``."""


class FeatureGrids(NamedTuple):
    """Per-resolution feature maps: entry 0 for the initialisation, then one per refinement
    resolution. ``hires [B, T, h/4, w/4, 128]``, ``lowres [B, T, h/8, w/8, 256]``."""

    hires: tuple[jax.Array, ...]
    lowres: tuple[jax.Array, ...]


class QueryFeatures(NamedTuple):
    """Query descriptors read from the grids: ``hires [B, N, 128]``, ``lowres [B, N, 256]``."""

    hires: tuple[jax.Array, ...]
    lowres: tuple[jax.Array, ...]


def grid_resolution(grids: FeatureGrids, level: int) -> tuple[int, int]:
    """The image resolution (h, w) a feature level was computed at (8x the stride-8 grid)."""
    h, w = grids.lowres[level].shape[-3:-1]
    return (8 * h, 8 * w)


class TAPIR(nnx.Module):
    """The TAPIR model; see the module docstring. Parameter names follow the checkpoints'."""

    def __init__(self, config: TapirConfig | None = None, *, rngs: nnx.Rngs | None = None):
        config = config or TapirConfig()
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.features = FeatureExtractor(config, rngs)
        self.cost_volume_regression_1 = nnx.Conv(1, 16, (3, 3), padding="SAME", rngs=rngs)
        self.cost_volume_regression_2 = nnx.Conv(16, 1, (3, 3), padding="SAME", rngs=rngs)
        self.cost_volume_occlusion_1 = nnx.Conv(
            16, 32, (3, 3), strides=2, padding="SAME", rngs=rngs
        )
        self.cost_volume_occlusion_2 = nnx.Linear(32, 16, rngs=rngs)
        self.occlusion_out = nnx.Linear(16, 2, rngs=rngs)
        self.pips_mlp_mixer = PipsMixer(
            config.mixer_input_dim,
            config.mixer_output_dim,
            config.mixer_hidden_dim,
            config.num_mixer_blocks,
            config.mixer_kernel_size,
            config.use_causal_conv,
            rngs,
        )

    # ------------------------------------------------------------------ features
    def get_feature_grids(
        self, video: Float[Array, "B T H W 3"], resolutions: Sequence[tuple[int, int]]
    ) -> FeatureGrids:
        """Feature maps of ``video [B, T, H, W, 3]`` (in [-1, 1]) at each resolution."""
        hires, lowres = [], []
        prev = None
        for res in resolutions:
            res = (int(res[0]), int(res[1]))
            stride_check(res)
            if res == prev:
                hires.append(hires[-1])
                lowres.append(lowres[-1])
                continue
            hi, lo = self.features(resize_frames(video, res))
            hires.append(hi)
            lowres.append(lo)
            prev = res
        return FeatureGrids(tuple(hires), tuple(lowres))

    def get_query_features(
        self, grids: FeatureGrids, query_points: Float[Array, "B N 3"], video_hw: tuple[int, int]
    ) -> QueryFeatures:
        """Bilinear read of every level at the queries ``[B, N, 3]`` (video pixels)."""
        frame = jnp.round(query_points[..., 0]).astype(jnp.int32)

        def read(grid):
            gh, gw = grid.shape[-3:-1]
            yx = query_points[..., 1:] * jnp.array(
                [gh / video_hw[0], gw / video_hw[1]], query_points.dtype
            )
            return jax.vmap(lambda g, f, p: bilinear_sample(g, p, "nearest", f))(grid, frame, yx)

        return QueryFeatures(
            tuple(read(g) for g in grids.hires), tuple(read(g) for g in grids.lowres)
        )

    # ------------------------------------------------------------ initialisation
    def tracks_from_cost_volume(
        self,
        query_lowres: Float[Array, "B N C"],
        grid: Float[Array, "B T h w C"],
        image_hw: tuple[int, int],
        query_points: Float[Array, "B N 3"] | None = None,
    ) -> tuple[Float[Array, "B N T 2"], Float[Array, "B N T"], Float[Array, "B N T"]]:
        """TAP-Net initialisation. ``query_lowres [B, N, C]``, ``grid [B, T, h, w, C]``.

        Returns positions ``[B, N, T, 2]`` as (x, y) in pixels of ``image_hw``, and the
        occlusion and expected-distance logits ``[B, N, T]``. With ``query_points``
        (``[B, N, 3]`` in ``image_hw`` pixels) a query is placed exactly on its own frame.
        """
        cost = jnp.einsum("bnc,bthwc->bnthw", query_lowres, grid)[..., None]
        hid = jax.nn.relu(self.cost_volume_regression_1(cost))
        logits = self.cost_volume_regression_2(hid)[..., 0]
        b, n, t, gh, gw = logits.shape
        heat = jax.nn.softmax(
            (logits * self.config.softmax_temperature).reshape(b, n, t, gh * gw), axis=-1
        ).reshape(b, n, t, gh, gw)
        points = soft_argmax(heat, self.config.soft_argmax_radius)
        points = points * jnp.array([image_hw[1] / gw, image_hw[0] / gh], points.dtype)
        if query_points is not None:
            qframe = jnp.round(query_points[..., 0]).astype(jnp.int32)
            is_query = (qframe[..., None] == jnp.arange(t))[..., None]
            points = jnp.where(is_query, query_points[:, :, None, 2:0:-1], points)
        occ = jax.nn.relu(self.cost_volume_occlusion_1(hid))
        occ = jnp.mean(occ, axis=(-3, -2))
        occ = jax.nn.relu(self.cost_volume_occlusion_2(occ))
        occ = self.occlusion_out(occ)
        return points, occ[..., 0], occ[..., 1]

    # ---------------------------------------------------------------- refinement
    def refine(
        self,
        pyramid: Sequence[Float[Array, "B T h w C"]],
        points: Float[Array, "B N T 2"],
        occlusion: Float[Array, "B N T"],
        expected_dist: Float[Array, "B N T"],
        feats: Float[Array, "B N T D"],
        init_hw: tuple[int, int],
        refine_hw: tuple[int, int],
        state: MixerState | None = None,
    ):
        """One PIPs iteration. ``points [B, N, T, 2]`` (x, y) at ``init_hw``; ``feats
        [B, N, T, 128 + 256]`` the running per-frame features (the tiled query features on
        the first iteration of a resolution). Returns updated (points, occlusion,
        expected_dist, feats, state)."""
        cfg = self.config
        half = cfg.patch_size // 2
        dy, dx = jnp.meshgrid(
            jnp.arange(-half, half + 1), jnp.arange(-half, half + 1), indexing="ij"
        )
        offsets = jnp.stack([dy.reshape(-1), dx.reshape(-1)], axis=-1).astype(points.dtype)
        b, n, t = points.shape[:3]
        frame = jnp.arange(t)[None, :, None]  # broadcasts against [N, T, S]
        corrs = []
        for level, grid in enumerate(pyramid):
            gh, gw = grid.shape[-3:-1]
            yx = points[..., ::-1] * jnp.array([gh / init_hw[0], gw / init_hw[1]], points.dtype)
            yx = yx[..., None, :] + offsets  # [B, N, T, S, 2]
            query = feats[..., : cfg.hires_dim] if level == 0 else feats[..., cfg.hires_dim :]
            neighbourhood = jax.vmap(lambda g, p: bilinear_sample(g, p, "constant", frame))(
                grid, yx
            )
            corrs.append(jnp.einsum("bntsc,bntc->bnts", neighbourhood, query))
        mlp_input = jnp.concatenate(
            [jnp.zeros_like(points), occlusion[..., None], expected_dist[..., None], feats] + corrs,
            axis=-1,
        )
        x = mlp_input.reshape((b * n, t, mlp_input.shape[-1]))
        if state is not None:
            state = jax.tree.map(lambda s: s.reshape((b * n,) + s.shape[2:]), state)
        res, new_state = self.pips_mixer_call(x, state)
        res = res.reshape((b, n, t, res.shape[-1]))
        if new_state is not None:
            new_state = jax.tree.map(lambda s: s.reshape((b, n) + s.shape[1:]), new_state)
        scale = jnp.array([init_hw[1] / refine_hw[1], init_hw[0] / refine_hw[0]], points.dtype)
        return (
            points + res[..., :2] * scale,
            occlusion + res[..., 2],
            expected_dist + res[..., 3],
            feats + res[..., 4:],
            new_state,
        )

    def pips_mixer_call(self, x, state):
        return self.pips_mlp_mixer(x, state)

    # ------------------------------------------------------------- trajectories
    def num_iterations(self, grids: FeatureGrids) -> int:
        return self.config.num_pips_iter * (len(grids.lowres) - 1)

    def initial_causal_state(
        self, batch: int, num_points: int, num_resolutions: int = 1
    ) -> CausalState:
        """Zeros: the state before the first frame (equal to the causal zero padding)."""
        one = jax.tree.map(
            lambda s: s.reshape((batch, num_points) + s.shape[1:]),
            self.pips_mlp_mixer.zero_state(batch * num_points),
        )
        return tuple(one for _ in range(self.config.num_pips_iter * num_resolutions))

    def estimate_trajectories(
        self,
        grids: FeatureGrids,
        query_features: QueryFeatures,
        video_hw: tuple[int, int],
        query_points: Float[Array, "B N 3"] | None = None,
        causal_state: CausalState | None = None,
    ) -> dict[str, Any]:
        """Initialisation and every refinement iterate.

        Returns lists ``tracks`` (``[B, N, T, 2]`` (x, y) in video pixels), ``occlusion`` and
        ``expected_dist`` (``[B, N, T]`` logits), one entry per iterate (0 = TAP-Net
        initialisation), and ``causal_state`` (causal models only; zeros when ``None``).
        ``query_points`` (``[B, N, 3]``, video pixels) pins each query on its frame in the
        initialisation; online tracking passes ``None``.
        """
        cfg = self.config
        init_hw = grid_resolution(grids, 0)
        to_video = jnp.array([video_hw[1] / init_hw[1], video_hw[0] / init_hw[0]], jnp.float32)
        pinned = None
        if query_points is not None:
            pinned = query_points * jnp.array(
                [1.0, init_hw[0] / video_hw[0], init_hw[1] / video_hw[1]], query_points.dtype
            )
        points, occ0, expd0 = self.tracks_from_cost_volume(
            query_features.lowres[0], grids.lowres[0], init_hw, pinned
        )
        tracks, occs, expds = [points * to_video], [occ0], [expd0]
        occ, expd = occ0, expd0
        num_iters = self.num_iterations(grids)
        if cfg.use_causal_conv and causal_state is None:
            b, n = points.shape[:2]
            causal_state = self.initial_causal_state(b, n, len(grids.lowres) - 1)
        new_states = []
        feats = None
        t = points.shape[2]
        for i in range(num_iters):
            level = i // cfg.num_pips_iter + 1
            if feats is None:
                both = jnp.concatenate(
                    [query_features.hires[level], query_features.lowres[level]], axis=-1
                )
                feats = jnp.broadcast_to(both[:, :, None, :], both.shape[:2] + (t, both.shape[-1]))
            pyramid = [grids.hires[level], grids.lowres[level]]
            for _ in range(cfg.pyramid_level):
                pyramid.append(avg_pool_2x(pyramid[-1]))
            state = causal_state[i] if cfg.use_causal_conv else None
            points, occ, expd, feats, state = self.refine(
                pyramid, points, occ, expd, feats, init_hw, grid_resolution(grids, level), state
            )
            new_states.append(state)
            tracks.append(points * to_video)
            occs.append(occ)
            expds.append(expd)
            if (i + 1) % cfg.num_pips_iter == 0:
                feats = None
                occ, expd = occ0, expd0
        out: dict[str, Any] = {"tracks": tracks, "occlusion": occs, "expected_dist": expds}
        if cfg.use_causal_conv:
            out["causal_state"] = tuple(new_states)
        return out

    def __call__(
        self,
        video: Float[Array, "B T H W 3"],
        query_points: Float[Array, "B N 3"],
        *,
        initial_resolution: tuple[int, int] = (256, 256),
        refinement_resolutions: Sequence[tuple[int, int]] | None = None,
        pin_queries: bool = True,
        causal_state: CausalState | None = None,
    ) -> dict[str, Any]:
        """Track ``query_points [B, N, 3]`` (t, y, x in video pixels) through ``video
        [B, T, H, W, 3]`` in [-1, 1].

        Returns ``tracks [B, N, T, 2]`` (x, y in video pixels), ``occlusion`` and
        ``expected_dist`` logits ``[B, N, T]`` (the average over refinement resolutions of
        the last iterate of each), the per-iterate lists ``unrefined_*`` (all iterates but
        the last, as in the reference, for the training losses), and ``causal_state`` for
        causal models. ``refinement_resolutions`` defaults to ``[initial_resolution]``.
        """
        init = (int(initial_resolution[0]), int(initial_resolution[1]))
        refine = (
            [init] if refinement_resolutions is None else [tuple(r) for r in refinement_resolutions]
        )
        video_hw = (int(video.shape[-3]), int(video.shape[-2]))
        grids = self.get_feature_grids(video, [init, *refine])
        qf = self.get_query_features(grids, query_points, video_hw)
        traj = self.estimate_trajectories(
            grids, qf, video_hw, query_points if pin_queries else None, causal_state
        )
        return summarize(traj, self.config.num_pips_iter)


def summarize(traj: dict[str, Any], num_pips_iter: int) -> dict[str, Any]:
    """Final outputs (mean over resolutions of each resolution's last iterate) + iterates."""
    p = num_pips_iter
    out = {
        key: jnp.mean(jnp.stack(traj[key][p::p]), axis=0)
        for key in ("tracks", "occlusion", "expected_dist")
    }
    for key in ("tracks", "occlusion", "expected_dist"):
        out[f"unrefined_{key}"] = traj[key][:-1]
    if "causal_state" in traj:
        out["causal_state"] = traj["causal_state"]
    return out


def visibility(
    occlusion_logits: Float[Array, "*S"], expected_dist_logits: Float[Array, "*S"]
) -> Bool[Array, "*S"]:
    """TAPIR's visible flag: ``(1 - sigmoid(occ)) * (1 - sigmoid(expected_dist)) > 0.5``."""
    return (1 - jax.nn.sigmoid(occlusion_logits)) * (1 - jax.nn.sigmoid(expected_dist_logits)) > 0.5


def preprocess_frames(frames: Shaped[Array, "*S H W 3"]) -> Float[Array, "*S H W 3"]:
    """uint8 ``[0, 255]`` -> float32 ``[-1, 1]``."""
    return frames.astype(jnp.float32) / 255.0 * 2.0 - 1.0
