"""Flow-guided action planning (3DFlowAction section 4): plan check, grasps, reachability, and
the SE(3) and joint-space trajectory optimisers. See docs/planning.md.

Submodules are imported explicitly (``from jflow.planning.trajectory import ...``) so that
importing this package loads neither JAX nor MJX. The jitted functions of the planner compile
with XLA's CPU fusion emitters off (``jflow.runtime.planning_jit``), whatever the process's
``XLA_FLAGS``; code that jits MJX kinematics itself should use ``planning_jit`` too, or call
``jflow.runtime.configure_for_planning()`` before JAX starts.
"""
