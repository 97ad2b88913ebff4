"""Process settings of the pipeline's jobs: XLA's CPU fusion emitters must be off for planning.

MJX kinematics (grasp reachability) compiles and runs about 10^4 times slower with XLA's CPU
fusion emitters on (docs/planning.md); the flag only takes effect if it is in ``XLA_FLAGS`` when
JAX starts its backend. :func:`require_planning_flags` applies it, and when JAX has already
started without it (a module that builds a JAX array at import time, before the job could set
the flag), it restarts the command-line program with the flag in its environment, or raises a
:class:`~jflow.errors.ConfigError` saying what to set when the job runs inside another program
(a notebook, a test) that it must not restart.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jflow.errors import ConfigError
from jflow.runtime import FUSION_EMITTERS_OFF, configure_for_planning

_RESTARTED = "JFLOW_PLANNING_RESTART"


def _is_command_line_program() -> bool:
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name == "jflow" or (name == "cli.py" and "jflow" in sys.argv[0])


def require_planning_flags() -> None:
    """Make sure planning runs with the fusion emitters off (module docs)."""
    if configure_for_planning():
        return  # set before JAX started, or already in XLA_FLAGS when it started
    if _is_command_line_program() and os.environ.get(_RESTARTED) != "1":
        env = dict(os.environ)
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FUSION_EMITTERS_OFF}".strip()
        env[_RESTARTED] = "1"
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    raise ConfigError(
        "JAX started before the planning settings could be applied; start the process with "
        f"XLA_FLAGS={FUSION_EMITTERS_OFF} (or call jflow.runtime.configure_for_planning() "
        "before anything imports JAX)"
    )


__all__ = ["require_planning_flags"]
