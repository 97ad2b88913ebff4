"""End to end in the simulator: the view of an env state, the oracle through the planner on a
cheap episode, and `eval-kitchen`'s files for two methods (a 2-step tiny model and the oracle).

The two tests share one planner compilation (8-frame flows, 16 keypoints)."""

import json
from pathlib import Path

import jaxlie
import numpy as np
import pytest

from jflow.data.kitchen_dataset import GenKitchenConfig, generate_kitchen_dataset
from jflow.models import TextEncoder
from jflow.pipeline.evaluation import EvalKitchenConfig, evaluate_kitchen, run_episode
from jflow.pipeline.methods import Oracle
from jflow.pipeline.observation import KitchenObserver
from jflow.sim import kitchen_constants as kc
from jflow.sim.env import KitchenEnv
from jflow.sim.kinematics import PandaKinematics
from jflow.sim.tasks import get_task

TASK = "open_slide_cabinet"


@pytest.fixture(scope="module")
def env():
    return KitchenEnv()


@pytest.fixture(scope="module")
def observer():
    with KitchenObserver(64, grid=8) as obs:
        yield obs


def test_the_view_shows_the_env_state(env, observer):
    state = env.reset(TASK, 3)
    observer.start_episode(TASK, 3)
    view = observer.observe(state)
    assert view.rgb.shape == (64, 64, 3) and view.points.shape == (64, 3)
    # The slide door's points project into its mask where visible, at the rendered depth.
    vis = view.visible
    assert vis.sum() >= 10
    rc = np.floor(view.tracks[vis]).astype(int)[:, ::-1]
    assert view.object_mask[rc[:, 0], rc[:, 1]].all()
    # (within the depth test's tolerance: 1 cm + half a pixel's depth change on a slope <= 45 deg)
    tol = 0.01 + 0.5 * 1.6 / float(view.intrinsics.fx)
    np.testing.assert_allclose(view.depth_points[vis], view.depth[rc[:, 0], rc[:, 1]], atol=tol)
    # Moving the door in the state moves its points in the view by the same amount.
    idx = env.kitchen.qpos_indices(get_task(TASK).joints)
    qpos = state.qpos.copy()
    qpos[idx] += 0.2
    moved = observer.observe(type(state)(qpos, state.qvel, 0.0, TASK, 0, False))
    shift = np.asarray(moved.points) - np.asarray(view.points)[np.argsort(view.order)][moved.order]
    np.testing.assert_allclose(np.linalg.norm(shift, axis=1), 0.2, atol=1e-6)
    # The ground-truth flow along a path starts at the observed points and ends moved.
    values = np.linspace(state.qpos[idx], state.qpos[idx] + 0.3, 8)
    flow = observer.flow_along(view, values)
    np.testing.assert_allclose(flow.points[0], view.points, atol=1e-6)
    np.testing.assert_allclose(
        np.linalg.norm(flow.points[-1] - flow.points[0], axis=1), 0.3, atol=1e-5
    )
    cam = np.asarray(view.camera_pose.as_matrix())
    assert isinstance(view.camera_pose, jaxlie.SE3) and abs(np.linalg.det(cam[:3, :3]) - 1) < 1e-5


def test_oracle_through_the_planner_opens_the_slide_cabinet(env, observer):
    outcome = run_episode(
        env, observer, Oracle(frames=8), TASK, 0, chunk_len=16, budget=400,
        kinematics=PandaKinematics(),
    )  # fmt: skip
    row = outcome.row
    assert row["success"], row
    assert row["stop_reason"] == "success" and row["failure_stage"] == ""
    assert row["final_goal_distance"] < kc.BONUS_THRESH
    first = row["events"][0]
    # The first plan grasps (hand empty) and follows the ground-truth flow within 5 mm (the planning acceptance bound).
    assert first["ok"] and not first["grasped"] and first["keypoint_error_m"] < 5e-3
    assert 20 < row["steps"] < 400


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(max_length=8)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, text_encoder, train_tiny_run) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    data = root / "data"
    generate_kitchen_dataset(
        GenKitchenConfig(
            out=data,
            tasks=(TASK,),
            episodes_per_task=2,
            frames=8,
            resolution=64,
            grid=8,
            num_shards=1,
            progress=False,
        )  # fmt: skip
    )
    return train_tiny_run(data, root / "run", text_encoder)


def test_eval_kitchen_writes_the_table_for_two_methods(tiny_run, text_encoder, tmp_path):
    from jflow.pipeline.predictor import FlowPredictor

    predictor = FlowPredictor(tiny_run, samples=2, text_encoder=text_encoder)
    assert (predictor.frames, predictor.grid, predictor.resolution) == (8, (8, 8), 64)
    config = EvalKitchenConfig(
        out=tmp_path / "eval", tasks=(TASK,), methods=("ours", "oracle"), episodes=1,
        first_seed=4, model_run=tiny_run, budget=300, progress=False,
    )  # fmt: skip
    report = evaluate_kitchen(config, predictor=predictor)
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["complete"] and saved["seeds"] == [4]
    assert saved["methods"] == ["ours", "oracle"]
    assert [(r["method"], r["seed"]) for r in saved["episodes"]] == [("ours", 4), ("oracle", 4)]
    assert saved["model"]["checkpoint_step"] == 2
    oracle = saved["summary"][TASK]["oracle"]
    assert oracle["successes"] == 1 and oracle["wilson95"][0] == pytest.approx(0.2065, abs=1e-3)
    ours = saved["summary"][TASK]["ours"]
    assert ours["episodes"] == 1
    # A 2-step model's flows: whatever happened is recorded with its stage and reason.
    row = saved["episodes"][0]
    assert row["plans"] >= 1 and all(e["reason"] for e in row["events"])
    if not row["success"]:
        assert row["failure_stage"] in ("plan_check", "grasp", "trajectory", "reach", "flow",
                                        "execution")  # fmt: skip
    markdown = (tmp_path / "eval" / "results.md").read_text()
    assert "| task | ours | oracle |" in markdown
    assert f"| `{TASK}` | {ours['successes']}/1" in markdown and "1/1 (100%, [21, 100])" in markdown
    assert "seeds 4 (the same for every method)" in markdown
    assert report["summary"] == saved["summary"]
