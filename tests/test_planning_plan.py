"""Bad input through the plan entry point (``plan_actions``): a result that says why no plan
exists, never a NaN trajectory. (No reachable grasp: tests/test_planning_grasps.py; the errors
of the optimisers' own entry points: test_planning_trajectory.py, test_planning_joint.py.)"""

import dataclasses

import numpy as np

from jflow.planning.grasps import GraspCandidates
from jflow.planning.plan import plan_actions, write_plan
from jflow.planning.synthetic import synthetic_rigid_flow


def _setup():
    flow, grasp, _ = synthetic_rigid_flow("hinge", num_frames=8, num_points=40, seed=4)
    pose = np.asarray(grasp.as_matrix(), np.float64)
    return flow, GraspCandidates(pose[None], np.array([0.04]), np.array([1.0]))


def test_bad_flows_give_a_result_with_the_reason(tmp_path):
    flow, grasps = _setup()
    nan = np.array(flow.points)
    nan[3, 5] = np.nan
    few = np.zeros_like(flow.visible)
    few[:, :2] = True  # 2 points visible in every frame
    cases = {
        "NaN": dataclasses.replace(flow, points=nan),
        "static flow": dataclasses.replace(
            flow, points=np.broadcast_to(flow.points[:1], flow.points.shape)
        ),
        "need at least 3 points visible": dataclasses.replace(flow, visible=few),
    }
    for expected, bad in cases.items():
        result = plan_actions([bad], "open the cabinet door", grasps=grasps)
        assert not result.ok and expected in result.reason, (expected, result.reason)
        assert result.ee_poses is None and result.joint_trajectory is None
        paths = write_plan(result, tmp_path / expected.replace(" ", "_"))
        assert [p.name for p in paths] == ["plan.json"]  # no plan.npz without a plan
        assert expected in paths[0].read_text()
