"""Tests for xlsr_jax.checkpointing: round trip, keep-last-N, cross-mesh restore, params-only load."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.trainer_testlib import run_with_devices
from xlsr_jax import checkpointing, sharding


def _tree(seed: int):
    rng = np.random.default_rng(seed)
    return {
        "encoder": {
            "kernel": rng.standard_normal((16, 32)).astype(np.float32),
            "bias": rng.standard_normal((32,)).astype(np.float32),
        },
        "head": {"kernel": rng.standard_normal((32, 8)).astype(np.float32)},
    }


def _abstract(tree, sharding_):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_), tree)


def test_round_trip_keep_last_n_and_metadata(tmp_path):
    mesh = sharding.create_mesh(devices=jax.devices()[:1])
    repl = sharding.replicated(mesh)
    manager = checkpointing.CheckpointManager(str(tmp_path), save_every_steps=2, keep=2)
    for step in range(1, 8):
        params = jax.tree.map(lambda x, s=step: jnp.asarray(x) * s, _tree(0))
        train_state = {"step": jnp.asarray(step, jnp.int32), "rng": jax.random.PRNGKey(step)}
        manager.save(
            step, params, train_state, config={"run": "t", "step": step}, data_state={"epoch": 0, "position": step * 3}
        )
    manager.save(
        7, params, train_state, config={"run": "t", "step": 7}, data_state={"epoch": 0, "position": 21}, force=True
    )
    manager.wait()
    # Saved on multiples of 2 plus the forced 7; only the newest 2 are kept.
    assert manager.all_steps() == [6, 7]
    p, ts, cfg, data = manager.restore(
        6,
        _abstract(_tree(0), repl),
        {
            "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=repl),
            "rng": jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=repl),
        },
    )
    np.testing.assert_array_equal(p["head"]["kernel"], _tree(0)["head"]["kernel"] * 6)
    assert int(ts["step"]) == 6
    np.testing.assert_array_equal(ts["rng"], jax.random.PRNGKey(6))
    assert cfg == {"run": "t", "step": 6}
    assert data == {"epoch": 0, "position": 18}
    assert checkpointing.read_config(str(tmp_path)) == {"run": "t", "step": 7}
    manager.close()


def test_restore_params_partial_subtree(tmp_path):
    mesh = sharding.create_mesh(devices=jax.devices()[:1])
    manager = checkpointing.CheckpointManager(str(tmp_path), save_every_steps=1, keep=1)
    full = jax.tree.map(jnp.asarray, _tree(1))
    manager.save(3, full, {"step": jnp.asarray(3)}, config={}, data_state=None)
    manager.close()
    only_encoder = {"encoder": _abstract(_tree(1)["encoder"], sharding.replicated(mesh))}
    restored = checkpointing.restore_params(str(tmp_path), only_encoder)
    assert set(restored) == {"encoder"}
    np.testing.assert_array_equal(restored["encoder"]["kernel"], _tree(1)["encoder"]["kernel"])
    with pytest.raises(FileNotFoundError, match="expected an exported model"):
        checkpointing.restore_params(str(tmp_path / "missing"), only_encoder)


@pytest.mark.slow
def test_checkpoint_saved_on_8_devices_restores_on_1(tmp_path):
    # Save with parameters FSDP-sharded 8 ways in a separate 8-device process.
    out = run_with_devices(
        f"""
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import NamedSharding, PartitionSpec as P
        from xlsr_jax import checkpointing, sharding
        from tests.training.test_checkpointing import _tree
        assert jax.device_count() == 8
        mesh = sharding.create_mesh(data=1, fsdp=8)
        spec = {{"encoder": {{"kernel": P("fsdp", None), "bias": P("fsdp")}},
                 "head": {{"kernel": P("fsdp", None)}}}}
        tree = _tree(2)
        params = jax.tree.map(lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), tree, spec,
                              is_leaf=lambda x: isinstance(x, np.ndarray))
        assert len(params["encoder"]["kernel"].sharding.device_set) == 8
        m = checkpointing.CheckpointManager({str(tmp_path)!r}, save_every_steps=1, keep=1)
        m.save(5, params, {{"step": jnp.asarray(5)}}, config={{"devices": 8}}, data_state=[1, 2])
        m.close()
        print("saved")
    """,
        devices=8,
    )
    assert "saved" in out
    mesh = sharding.create_mesh(devices=jax.devices()[:1])
    repl = sharding.replicated(mesh)
    manager = checkpointing.CheckpointManager(str(tmp_path), save_every_steps=1, keep=1)
    assert manager.latest_step() == 5
    params, _, cfg, data = manager.restore(
        5, _abstract(_tree(2), repl), {"step": jax.ShapeDtypeStruct((), jnp.int32, sharding=repl)}
    )
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(_tree(2))):
        assert got.sharding == repl
        np.testing.assert_array_equal(got, want)
    assert cfg == {"devices": 8} and data == [1, 2]
    manager.close()


def test_gather_json_single_process_is_a_copy():
    obj = {"a": [1, 2], "b": "x"}
    got = checkpointing.gather_json_across_processes(obj)
    assert got == [obj]
    json.dumps(got)  # JSON-able
