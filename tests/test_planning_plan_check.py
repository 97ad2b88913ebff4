"""Plan check: z-buffered splatting, the rule verifier and the resampling loop."""

import dataclasses

import jax.numpy as jnp
import jaxlie
import numpy as np
import pytest

from jflow.geometry.camera import PinholeIntrinsics
from jflow.planning.plan_check import Observation, PlanCheckConfig, check_plan, fit_object_motion
from jflow.planning.splatting import splat_points
from jflow.planning.synthetic import MOTIONS, synthetic_rigid_flow
from jflow.planning.verifier import PlanProposal, RuleVerifier, VLMVerifier

K = PinholeIntrinsics.from_fovy(60.0, 32, 24)


def test_splat_keeps_the_nearest_point_per_pixel():
    # Two points on the same ray: the nearer one's colour wins; a third lands elsewhere.
    pts = jnp.array([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [0.3, 0.0, 1.0], [0.0, 0.0, -1.0]])
    col = jnp.array([[255.0, 0, 0], [0, 255.0, 0], [0, 0, 255.0], [9.0, 9, 9]])
    out = splat_points(pts, col, jnp.ones(4, bool), K, 0)
    row, colm = 12, 16  # the principal point (16, 12) is the corner of pixel (12, 16)
    np.testing.assert_allclose(np.asarray(out.image[row, colm]), [0, 255, 0])
    assert float(out.depth[row, colm]) == pytest.approx(1.0)
    assert int(np.asarray(out.filled).sum()) == 2  # the point behind the camera is dropped
    wide = splat_points(pts, col, jnp.ones(4, bool), K, 1)
    assert int(np.asarray(wide.filled).sum()) == 18  # two 3x3 footprints


def _tabletop():
    """A camera 1 m above a grey table looking straight down, a red 8x8-pixel box on it."""
    h, w = K.height, K.width
    depth = np.full((h, w), 1.0, np.float32)
    rgb = np.full((h, w, 3), 128, np.uint8)
    mask = np.zeros((h, w), bool)
    mask[8:16, 6:14] = True
    depth[mask] = 0.9
    rgb[mask] = (255, 0, 0)
    # World z up; the camera looks down -z: camera x = world x, camera y = -world y.
    rot = jaxlie.SO3.from_matrix(jnp.diag(jnp.array([1.0, -1.0, -1.0])))
    cam = jaxlie.SE3.from_rotation_and_translation(rot, jnp.array([0.0, 0.0, 1.0]))
    return Observation(rgb, depth, mask, K, cam)


def test_rendered_prediction_moves_the_object_pixels():
    obs = _tabletop()
    # Slide the box +0.2 m along world x: at 0.9 m depth that is 0.2 * fx / 0.9 pixels right.
    shift = float(0.2 * K.fx / 0.9)
    flow_pts = np.stack([np.array([[x, y, 0.1] for x in (0, 0.05) for y in (0, 0.05)])] * 2)
    flow_pts[1, :, 0] += 0.2
    from jflow.flow.records import ObjectFlow

    flow = ObjectFlow(
        flow_pts.astype(np.float32),
        np.ones((2, 4), bool),
        np.zeros((2, 4, 2), np.float32),
        np.ones((2, 4), np.float32),
        "world",
    )
    result = check_plan(
        lambda attempt: [flow],
        "slide the box",
        obs,
        RuleVerifier(
            dataclasses.replace(
                RuleVerifier().config,
                workspace=dataclasses.replace(
                    RuleVerifier().config.workspace, table_height=-1.0, lower=(-2, -2, -2)
                ),
            )
        ),
    )
    assert result.accepted, result.reason
    image = np.asarray(result.predicted.image)
    red = (image[..., 0] > 200) & (image[..., 1] < 50)
    cols = np.flatnonzero(red.any(axis=0))
    assert cols.min() == pytest.approx(6 + shift, abs=1.5)
    assert not red[:, 6:9].any()  # the uncovered table is no longer red


@pytest.mark.parametrize("kind", MOTIONS)
def test_rule_verifier_accepts_rigid_kitchen_like_motions(kind):
    flow, _, _ = synthetic_rigid_flow(kind, num_frames=8, num_points=40, occlusion=0.1)
    result = check_plan(lambda attempt: [flow], f"open or move it ({kind})")
    assert result.accepted, result.reason
    assert result.attempts == 1
    assert result.verdicts[-1].measurements["fit_residual"] < 1e-3


def _shifted(flow, offset):
    pts = np.array(flow.points)
    ramp = np.linspace(0.0, 1.0, pts.shape[0])[:, None, None]
    return dataclasses.replace(flow, points=(pts + ramp * np.asarray(offset)).astype(np.float32))


def test_rule_verifier_rejects_impossible_flows_with_reasons():
    flow, _, _ = synthetic_rigid_flow("slide", num_frames=8, num_points=40)
    verify = RuleVerifier()
    cases = {
        "through the table": _shifted(flow, [0.0, 0.0, -0.8]),
        "leaves the workspace": _shifted(flow, [3.0, 0.0, 0.0]),
        "static flow": dataclasses.replace(
            flow, points=np.broadcast_to(flow.points[:1], flow.points.shape)
        ),
    }
    noisy = np.array(flow.points)
    noisy[-1] += np.random.default_rng(0).normal(scale=0.05, size=noisy[-1].shape)
    cases["rigidly"] = dataclasses.replace(flow, points=noisy.astype(np.float32))
    for expected, bad in cases.items():
        verdict = verify(PlanProposal("slide the door", bad, fit_object_motion(bad)))
        assert not verdict.accepted and expected in verdict.reason, (expected, verdict.reason)
    nan = np.array(flow.points)
    nan[3, 5] = np.nan
    verdict = verify(
        PlanProposal("slide", dataclasses.replace(flow, points=nan), fit_object_motion(flow))
    )
    assert not verdict.accepted and "NaN" in verdict.reason
    # Disagreement with the other samples.
    far = _shifted(flow, [0.0, 0.3, 0.0])
    verdict = verify(PlanProposal("slide", far, fit_object_motion(far), other_flows=(flow, flow)))
    assert not verdict.accepted and "disagrees" in verdict.reason


def test_resampling_until_accepted_and_budget():
    good, _, _ = synthetic_rigid_flow("hinge", num_frames=8, num_points=40)
    bad = _shifted(good, [0.0, 0.0, -0.8])
    calls = []

    def sampler(attempt):
        calls.append(attempt)
        return [bad] if attempt < 2 else [good]

    result = check_plan(sampler, "open the door")
    assert result.accepted and result.attempts == 3 and calls == [0, 1, 2]
    assert [v.accepted for v in result.verdicts] == [False, False, True]
    never = check_plan(lambda a: [bad], "open the door", config=PlanCheckConfig(max_attempts=2))
    assert not never.accepted and never.flow is None
    assert "no flow accepted after 2 attempt(s)" in never.reason and "table" in never.reason


def test_vlm_verifier_uses_the_answer_and_the_prefilter():
    flow, _, _ = synthetic_rigid_flow("slide", num_frames=8, num_points=40)
    proposal = PlanProposal(
        "slide the door",
        flow,
        fit_object_motion(flow),
        np.zeros((4, 4, 3), np.uint8),
        np.zeros((4, 4, 3), np.uint8),
    )
    prompts = []

    def ask(prompt, images):
        prompts.append((prompt, len(images)))
        return "No. The door is still closed."

    verdict = VLMVerifier(ask)(proposal)
    assert not verdict.accepted and "still closed" in verdict.reason
    assert prompts and "slide the door" in prompts[0][0] and prompts[0][1] == 2
    assert VLMVerifier(lambda p, i: "Yes, done.")(proposal).accepted
    sunk = _shifted(flow, [0.0, 0.0, -0.8])
    assert not VLMVerifier(lambda p, i: "yes")(
        PlanProposal("slide", sunk, fit_object_motion(sunk))
    ).accepted
