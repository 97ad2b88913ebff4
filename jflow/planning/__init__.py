"""Flow-guided action planning (3DFlowAction section 4): plan check, grasps, reachability, and
the SE(3) and joint-space trajectory optimisers. See docs/planning.md.

Submodules are imported explicitly (``from jflow.planning.trajectory import ...``) so that
importing this package loads neither JAX nor MJX. Entry points call
``jflow.runtime.configure_for_planning()`` before JAX starts.
"""
