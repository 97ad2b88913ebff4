"""Headless rendering of the kitchen: RGB, metric depth and per-object segmentation.

Set ``MUJOCO_GL=egl`` (or ``osmesa``) before importing MuJoCo on a machine without a display.

* RGB: ``uint8 [H, W, 3]``.
* Depth: ``float32 [H, W]``, meters along the camera's optical axis (z, not ray length); MuJoCo's
  renderer linearises its z-buffer with the model's near/far planes (tests/test_sim_rendering.py
  checks it against known geometry).
* Segmentation: ``int32 [H, W]`` with the ids of
  :data:`jflow.sim.kitchen_constants.SEGMENTATION_OBJECTS` (0 = background).

One :class:`KitchenRenderer` owns one OpenGL context and a private copy of the model (lights and
procedural textures are randomised in place); reuse it across episodes.
"""

from __future__ import annotations

import cv2
import mujoco
import numpy as np

from jflow.errors import SimulationError
from jflow.sim import kitchen_constants as kc
from jflow.sim.cameras import check_resolution
from jflow.sim.model import KitchenModel


def _smooth_field(
    rng: np.random.Generator, h: int, w: int, faces: int, scales: tuple[tuple[int, float], ...]
) -> np.ndarray:
    """Sum of bicubically upsampled random grids (``cells`` per face side, weight), in [0, 1]."""
    field = np.zeros((h, w), np.float32)
    for cells, weight in scales:
        coarse = rng.random((faces * cells, cells)).astype(np.float32)
        field += weight * cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return (field - field.min()) / max(float(np.ptp(field)), 1e-6)


def procedural_texture(rng: np.random.Generator, size: int, faces: int = 6) -> np.ndarray:
    """A random tracker-friendly texture ``uint8 [faces * size, size, 3]``.

    Smooth multi-scale noise (blobs of 1/4, 1/10 and 1/20 of a face) mapped through a random
    3-colour palette, times an independent smooth brightness field (blobs of 1/6 and 1/14 of a
    face, brightness 0.45-1.35): rich, non-repeating texture with contrast at the scale of a few
    rendered pixels, and no per-texel grain or fine checkers, which alias to flicker when a
    textured part moves by a fraction of a pixel (measured on kitchen videos with ground truth:
    small parts such as the burner knobs are found by moving-object detection with this
    texture, and mostly not with grain and checkers; docs/extraction.md).
    """
    h, w = faces * size, size
    t = _smooth_field(rng, h, w, faces, ((4, 1.0), (10, 0.7), (20, 0.4)))[..., None]
    palette = rng.random((3, 3)).astype(np.float32)
    palette[rng.integers(3)] *= 0.3  # one dark colour for contrast
    rgb = np.where(
        t < 0.5,
        palette[0] * (1 - 2 * t) + palette[1] * 2 * t,
        palette[1] * (2 - 2 * t) + palette[2] * (2 * t - 1),
    )
    brightness = _smooth_field(rng, h, w, faces, ((6, 1.0), (14, 0.6)))
    rgb = rgb * (0.45 + 0.9 * brightness[..., None])
    return (np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)


class KitchenRenderer:
    """Renders one kitchen (a private model copy) at a fixed ``width`` x ``height``."""

    def __init__(self, kitchen: KitchenModel, width: int, height: int | None = None):
        width, height = check_resolution(width, height)
        self.kitchen = kitchen.copy()
        self.model = self.kitchen.model
        self.width, self.height = width, height
        try:
            self._renderer = mujoco.Renderer(self.model, height=height, width=width)
        except Exception as exc:
            raise SimulationError(
                f"could not create a MuJoCo renderer ({exc}); set MUJOCO_GL=egl or osmesa for headless use"
            ) from exc
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self._option = mujoco.MjvOption()
        self._seg_lut = np.concatenate([self.kitchen.geom_segmentation, [0]]).astype(np.int32)
        self._light_diffuse = self.model.light_diffuse.copy()
        self._light_ambient = self.model.light_ambient.copy()
        self._light_pos = self.model.light_pos.copy()
        self._headlight = (
            self.model.vis.headlight.ambient.copy(),
            self.model.vis.headlight.diffuse.copy(),
        )

    # --- randomisation -------------------------------------------------------------------------
    def randomize_textures(self, rng: np.random.Generator) -> None:
        """Draw a new procedural texture for every textured object and upload it to the GPU."""
        ctx = getattr(self._renderer, "_mjr_context", None)
        gl = getattr(self._renderer, "_gl_context", None)
        for tex in self.kitchen.texture_ids.values():
            w, h, c = (
                int(self.model.tex_width[tex]),
                int(self.model.tex_height[tex]),
                int(self.model.tex_nchannel[tex]),
            )
            adr = int(self.model.tex_adr[tex])
            image = procedural_texture(rng, w, faces=h // w)
            self.model.tex_data[adr : adr + w * h * c] = image.reshape(-1)
            if ctx is not None:
                if gl is not None:
                    gl.make_current()
                mujoco.mjr_uploadTexture(self.model, ctx, tex)

    def randomize_lighting(self, rng: np.random.Generator, enabled: bool = True) -> None:
        """Scale the lights' brightness and move them a little (reset to nominal if disabled)."""
        m = self.model
        m.light_diffuse[:] = self._light_diffuse
        m.light_ambient[:] = self._light_ambient
        m.light_pos[:] = self._light_pos
        m.vis.headlight.ambient[:] = self._headlight[0]
        m.vis.headlight.diffuse[:] = self._headlight[1]
        if not enabled:
            return
        n = m.nlight
        m.light_diffuse[:] = np.clip(self._light_diffuse * rng.uniform(0.6, 1.3, (n, 1)), 0, 1)
        m.light_ambient[:] = np.clip(self._light_ambient + rng.uniform(0.0, 0.15, (n, 1)), 0, 1)
        m.light_pos[:] = self._light_pos + rng.uniform(-0.3, 0.3, (n, 3))
        tint = rng.uniform(0.85, 1.0, 3)
        m.vis.headlight.ambient[:] = np.clip(
            self._headlight[0] * rng.uniform(0.7, 1.3) * tint, 0, 1
        )
        m.vis.headlight.diffuse[:] = np.clip(
            self._headlight[1] * rng.uniform(0.7, 1.3) * tint, 0, 1
        )

    # --- rendering -----------------------------------------------------------------------------
    def render(
        self, data: mujoco.MjData, camera: str, *, show_robot: bool = True, geom_ids: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rgb uint8 [H,W,3], depth float32 [H,W] m, segmentation int32 [H,W])`` of one view.

        ``data`` must have its kinematics computed (``mj_kinematics``/``mj_forward``). With
        ``geom_ids=True`` the third array holds raw MuJoCo geom ids (-1 = background) instead.
        """
        if camera not in kc.CAMERAS:
            from jflow.errors import UnknownNameError  # noqa: PLC0415

            raise UnknownNameError("camera", camera, kc.CAMERA_NAMES)
        self._option.geomgroup[kc.ROBOT_GEOM_GROUP] = 1 if show_robot else 0
        r = self._renderer
        r.update_scene(data, camera=camera, scene_option=self._option)
        r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        rgb = r.render().copy()
        r.enable_depth_rendering()
        depth = r.render().astype(np.float32, copy=True)
        r.disable_depth_rendering()
        r.enable_segmentation_rendering()
        raw = r.render()
        r.disable_segmentation_rendering()
        ids = raw[..., 0].astype(np.int32)
        is_geom = raw[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM)
        ids = np.where(is_geom, ids, -1)
        if geom_ids:
            return rgb, depth, ids
        return rgb, depth, self._seg_lut[ids]

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self) -> KitchenRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
