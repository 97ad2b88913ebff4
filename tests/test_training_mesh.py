"""Device meshes, FSDP shardings and the process-level XLA flag helper."""

import os

import jax
import pytest

from jflow.errors import ConfigError
from jflow.runtime import FUSION_EMITTERS_OFF, add_xla_flag
from jflow.training.mesh import batch_sharding, check_batch_divisible, fsdp_sharding, make_mesh


def test_mesh_shapes_and_errors():
    mesh = make_mesh(data=-1, fsdp=4)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
    assert dict(make_mesh(devices=jax.devices()[:1]).shape) == {"data": 1, "fsdp": 1}
    with pytest.raises(ConfigError, match="fsdp=3 does not divide the 8 devices"):
        make_mesh(fsdp=3)
    with pytest.raises(ConfigError, match="a 4x4 mesh needs 16 devices; 8 are available"):
        make_mesh(data=4, fsdp=4)
    with pytest.raises(
        ConfigError, match="global batch size 12 must be divisible by the 8 devices"
    ):
        check_batch_divisible(12, mesh)
    assert batch_sharding(mesh).spec == jax.sharding.PartitionSpec(("data", "fsdp"))


def test_fsdp_splits_the_largest_divisible_axis_of_large_arrays():
    mesh = make_mesh(data=2, fsdp=4)
    assert fsdp_sharding(mesh, (64, 512)).spec == jax.sharding.PartitionSpec(None, "fsdp")
    assert fsdp_sharding(mesh, (512, 63)).spec == jax.sharding.PartitionSpec("fsdp", None)
    assert fsdp_sharding(mesh, (8, 8)).spec == jax.sharding.PartitionSpec()  # Small: replicated.
    assert fsdp_sharding(mesh, (129, 127)).spec == jax.sharding.PartitionSpec()  # Nothing divides.
    plain = make_mesh(data=8, fsdp=1)
    assert fsdp_sharding(plain, (64, 512)).spec == jax.sharding.PartitionSpec()


def test_xla_flags_cannot_change_once_jax_has_started(monkeypatch):
    jax.numpy.zeros(1).block_until_ready()  # The backend is running in this process.
    before = os.environ.get("XLA_FLAGS", "")
    assert add_xla_flag("--xla_jflow_test_flag=true") is False
    assert os.environ.get("XLA_FLAGS", "") == before
    # The test session set the fusion-emitter flag before JAX started: it is reported as applied.
    assert FUSION_EMITTERS_OFF in before.split()
    assert add_xla_flag(FUSION_EMITTERS_OFF) is True
