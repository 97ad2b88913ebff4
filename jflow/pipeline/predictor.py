"""A trained flow model as a flow source: observation + instruction -> sampled world-frame flows.

:class:`FlowPredictor` loads a ``jflow train`` run (EMA weights, :func:`jflow.training.trainer.
load_trained_model`) and the normalisation statistics of the dataset it was trained on, and for an
observation (:class:`jflow.pipeline.observation.KitchenObservation`, rendered at the dataset's
resolution with the dataset's grid) builds the conditioning as training did: the RGB-D frame,
the instruction's text tokens, and frame 0 of the grid flow (the object's points: pixels, camera
depth, visibility), normalised with the training statistics. Samples are mapped back to the
world with :func:`jflow.evaluation.flow_eval.sampled_world_points` (de-normalise, unproject with
the observation's intrinsics, camera pose to world). Visibility is the sampled visibility channel
(> 0.5). With frame-0 clamping (the model's default) frame 0 of every sample is the observed
points.

Randomness: sample ``k`` of an episode uses ``fold_in(fold_in(key(seed), episode), k)``, so an
episode's flows depend only on ``(seed, task, episode seed, call index)``.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from jflow.errors import DataError, ShapeError
from jflow.flow.records import ObjectFlow


class FlowPredictor:
    """Samples flows from a trained run (module docs).

    Args:
      run_dir: the ``jflow train`` run folder (config.json + checkpoints/).
      samples: flows sampled per call.
      steps: sampler steps (``None``: the model's default).
      guidance_scale: classifier-free guidance (1 = plain conditional sampling).
      seed: base seed of the sampling keys.
      train_data: the training dataset folder (default: the one the run's config.json names).
      text_encoder: a :class:`jflow.models.TextEncoder` to share (default: a new one).
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        samples: int = 4,
        steps: int | None = None,
        guidance_scale: float = 1.0,
        seed: int = 0,
        train_data: str | Path | None = None,
        text_encoder=None,
    ):
        from jflow.data.shards import read_manifest
        from jflow.evaluation.flow_eval import check_run_folder
        from jflow.flow.normalization import FlowStats
        from jflow.training.trainer import load_trained_model

        if samples < 1:
            raise DataError(f"samples must be >= 1, got {samples}")
        self.run_dir = Path(run_dir)
        saved = check_run_folder(self.run_dir)
        data = Path(train_data) if train_data is not None else saved["train"].get("data")
        if not data or not (Path(data) / "manifest.json").is_file():
            raise DataError(
                f"the training dataset of {self.run_dir} ({data}) is not found (no manifest.json); "
                "pass its folder as train_data"
            )
        self.train_data = Path(data)
        manifest = read_manifest(self.train_data)
        self.stats = FlowStats.from_dict(manifest["normalization"])
        self.resolution = int(manifest["resolution"])
        self.camera = str(manifest["cameras"][0]["name"])
        self.grid = tuple(int(v) for v in manifest["grid"])
        self.model, self.model_config, self.step = load_trained_model(self.run_dir)
        self.frames = int(self.model_config.num_frames)
        if tuple(self.model_config.grid_hw) != self.grid:
            raise ShapeError(
                f"the model of {self.run_dir} has a {self.model_config.grid_hw} grid, its "
                f"dataset {self.train_data} a {self.grid} grid"
            )
        self.samples = int(samples)
        self.steps = steps
        self.guidance_scale = float(guidance_scale)
        self.seed = int(seed)
        if text_encoder is None:
            from jflow.models.text_encoder import TextEncoder

            text_encoder = TextEncoder()
        self.text = text_encoder
        self._episode = 0
        self._calls = 0

    def describe(self) -> dict:
        """What the report records about the model."""
        return {
            "run": str(self.run_dir),
            "checkpoint_step": int(self.step),
            "train_data": str(self.train_data),
            "frames": self.frames,
            "grid": list(self.grid),
            "resolution": self.resolution,
            "camera": self.camera,
            "samples": self.samples,
            "steps": self.steps or self.model_config.objective.steps,
            "guidance_scale": self.guidance_scale,
            "seed": self.seed,
            "config": json.loads(json.dumps(self.model_config.to_dict())),
        }

    def start_episode(self, task_id: str, seed: int) -> None:
        """Reset the sampling keys to the episode's (module docs)."""
        self._episode = (zlib.crc32(task_id.encode()) * 1_000_003 + int(seed)) % (2**31 - 1)
        self._calls = 0

    def initial_grid(self, observation) -> np.ndarray:
        """Frame 0 of the unnormalised grid flow ``[h, w, 4]`` (x, y, depth, visible)."""
        gh, gw = self.grid
        n = observation.points.shape[0]
        if n != gh * gw:
            raise ShapeError(f"the observation has {n} points, the model's grid is {gh}x{gw}")
        if observation.rgb.shape[:2] != (self.resolution, self.resolution):
            raise ShapeError(
                f"the observation is {observation.rgb.shape[1]}x{observation.rgb.shape[0]}, the "
                f"model was trained at {self.resolution}x{self.resolution}"
            )
        values = np.concatenate(
            [
                observation.tracks,
                observation.depth_points[:, None],
                observation.visible[:, None].astype(np.float32),
            ],
            axis=-1,
        )
        return values.reshape(gh, gw, 4).astype(np.float32)

    def predict(self, observation, instruction: str) -> list[ObjectFlow]:
        """``samples`` world-frame flows ``[T, N]`` for the observation and instruction."""
        import jax
        import jax.numpy as jnp

        from jflow.evaluation.clips import EvalClip
        from jflow.evaluation.flow_eval import sampled_world_points
        from jflow.flow.normalization import denormalize_grid, normalize_grid_numpy
        from jflow.models import Conditioning, sample

        grid0 = self.initial_grid(observation)
        tokens, mask = self.text.encode([instruction])
        cond = Conditioning(
            text_tokens=jnp.asarray(tokens),
            text_mask=jnp.asarray(mask),
            rgb=jnp.asarray(observation.rgb[None]),
            depth=jnp.asarray(observation.depth[None], jnp.float32),
            initial_points=jnp.asarray(normalize_grid_numpy(grid0[None], self.stats), jnp.float32),
        )
        key = jax.random.fold_in(
            jax.random.fold_in(jax.random.key(self.seed), self._episode), self._calls
        )
        self._calls += 1
        out = sample(
            self.model,
            cond,
            rng=key,
            num_samples=self.samples,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
        )
        samples = np.asarray(jax.block_until_ready(out))[0]  # [S, T, h, w, 4]
        if not np.all(np.isfinite(samples)):
            raise DataError(f"the model of {self.run_dir} sampled NaN or inf")
        clip = EvalClip(
            index=0,
            task_id=observation.task_id,
            instruction=instruction,
            seed=-1,
            rgb=observation.rgb,
            depth=observation.depth,
            intrinsics=observation.intrinsics,
            world_from_camera=observation.world_from_camera,
            points=observation.points[None],
            visible=observation.visible[None],
            grid=grid0[None],
        )
        world = sampled_world_points(samples, self.stats, clip)  # [S, T, N, 3]
        grid = np.asarray(denormalize_grid(samples, self.stats))
        s, t = grid.shape[:2]
        grid = grid.reshape(s, t, -1, 4)
        return [
            ObjectFlow(
                points=world[i].astype(np.float32),
                visible=grid[i, ..., 3] > 0.5,
                tracks=grid[i, ..., :2].astype(np.float32),
                depth=grid[i, ..., 2].astype(np.float32),
                frame="world",
            )
            for i in range(s)
        ]


__all__ = ["FlowPredictor"]
