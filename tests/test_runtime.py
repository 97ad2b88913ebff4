"""jflow.runtime.planning_jit: per-function XLA options for the planner."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jflow.runtime import FAST_MATH_OPTIONS, PLANNING_COMPILER_OPTIONS, planning_jit


def test_planning_jit_passes_jit_arguments_through():
    scaled = planning_jit(lambda x, n: x * n, static_argnames="n")
    np.testing.assert_allclose(scaled(jnp.arange(3.0), n=4), [0.0, 4.0, 8.0])
    # The options are XLA CPU settings that jax.jit accepts as compile options.
    opts = {**PLANNING_COMPILER_OPTIONS, **FAST_MATH_OPTIONS}
    direct = jax.jit(lambda x: x + 1.0, compiler_options=opts)
    assert float(direct(jnp.float32(1.0))) == 2.0


def test_fast_math_keeps_nan_and_inf_checks_but_may_fold_identities():
    """What FAST_MATH_OPTIONS keeps, and what it does not (its docstring)."""

    def classify(x):
        return jnp.where(jnp.isnan(x), -1.0, jnp.where(jnp.isinf(x), -2.0, 2.0 * x))

    out = planning_jit(classify, fast_math=True)(jnp.array([1.5, jnp.nan, jnp.inf, -jnp.inf]))
    np.testing.assert_array_equal(np.asarray(out), [3.0, -1.0, -2.0, -2.0])
    # A NaN propagates through reductions and norms...
    row = jnp.array([1.0, jnp.nan, 3.0])
    assert bool(jnp.isnan(planning_jit(lambda x: jnp.sum(2.0 * x), fast_math=True)(row)))
    assert bool(jnp.isnan(planning_jit(jnp.linalg.norm, fast_math=True)(row)))
    # ...but an identity may swallow it (strictly, nan - nan is nan): hence the input checks.
    nan = jnp.float32(jnp.nan)
    assert bool(jnp.isnan(planning_jit(lambda x: x - x)(nan)))
    assert float(planning_jit(lambda x: x - x, fast_math=True)(nan)) == 0.0


PLANNER_WITHOUT_FLAGS = """
import json
import jax.numpy as jnp
import jaxlie
from jflow.planning.reachability import IKConfig, panda_reachability
from jflow.robots import panda

checker = panda_reachability(IKConfig())
home = checker.forward_kinematics(jnp.asarray(panda.HOME_QPOS[None], jnp.float32))
far = jaxlie.SE3.from_rotation_and_translation(
    home.rotation(), home.translation() + jnp.array([[0.0, 0.0, 1.5]])
)
out = checker(jaxlie.SE3(jnp.concatenate([home.wxyz_xyz, far.wxyz_xyz])))
print(json.dumps({"reachable": [bool(r) for r in out.reachable],
                  "position_error": [float(e) for e in out.position_error]}))
"""


def test_the_planner_runs_in_a_process_with_the_fusion_emitters_on():
    """With XLA's CPU fusion emitters on for the whole process, MJX kinematics compiled with a
    plain jax.jit runs about 10^4 times slower (its first batched IK call did not finish in
    400 s); planning_jit's per-function options make the IK answer within seconds."""
    env = dict(os.environ, XLA_FLAGS="--xla_cpu_use_fusion_emitters=true")
    proc = subprocess.run(
        [sys.executable, "-c", PLANNER_WITHOUT_FLAGS],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["reachable"] == [True, False]
    assert out["position_error"][0] < 1e-3 and out["position_error"][1] > 0.5
