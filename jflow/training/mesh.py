"""Device meshes and shardings for data-parallel and FSDP training (jit, not pmap).

The mesh has two axes: ``data`` (the batch is split over it) and ``fsdp`` (parameters and
optimizer state are split over it, and the batch too). With ``fsdp = 1`` training is plain
data parallelism: parameters replicated, batch split. On several hosts call
:func:`initialize_distributed` first; the mesh then spans every host's devices.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jflow.errors import ConfigError

BATCH_AXES = ("data", "fsdp")


def initialize_distributed() -> None:
    """Start JAX's multi-host runtime when launched by a cluster scheduler (no-op otherwise).

    ``jax.distributed.initialize()`` reads the coordinator address, process count and id from
    the environment (SLURM, Open MPI, Cloud TPU, or ``JAX_COORDINATOR_ADDRESS`` /
    ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``).
    """
    import os

    if any(
        k in os.environ for k in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE")
    ):
        jax.distributed.initialize()


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
    """A ``(data, fsdp)`` mesh; ``data = -1`` takes every device not used by ``fsdp``."""
    devices = list(jax.devices() if devices is None else devices)
    if fsdp < 1:
        raise ConfigError(f"fsdp must be >= 1, got {fsdp}")
    if data == -1:
        if len(devices) % fsdp:
            raise ConfigError(f"fsdp={fsdp} does not divide the {len(devices)} devices")
        data = len(devices) // fsdp
    if data < 1 or data * fsdp > len(devices):
        raise ConfigError(
            f"a {data}x{fsdp} mesh needs {data * fsdp} devices; {len(devices)} are available"
        )
    grid = np.asarray(devices[: data * fsdp]).reshape(data, fsdp)
    return Mesh(grid, ("data", "fsdp"))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def fsdp_sharding(mesh: Mesh, shape: tuple[int, ...], min_size: int = 2**14) -> NamedSharding:
    """Split the largest axis divisible by the fsdp size; small arrays stay replicated."""
    n = mesh.shape["fsdp"]
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return replicated(mesh)
    for axis in np.argsort(shape)[::-1]:
        if shape[axis] % n == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return NamedSharding(mesh, PartitionSpec(*spec))
    return replicated(mesh)


def state_shardings(mesh: Mesh, tree):
    """Shardings for a pytree of parameters or optimizer state."""
    return jax.tree.map(lambda x: fsdp_sharding(mesh, tuple(np.shape(x))), tree)


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    n = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size % n:
        raise ConfigError(
            f"global batch size {batch_size} must be divisible by the {n} devices of the mesh"
        )


def put_batch(batch: dict, sharding: NamedSharding) -> dict:
    """Host numpy arrays (this host's part of the global batch) to global sharded arrays."""
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }
