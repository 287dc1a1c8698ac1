"""Tests for xlsr_jax.checkpointing: round trip, keep-last-N, cross-mesh restore, params-only load."""

import errno
import json
import logging
import os
import shutil
import subprocess
import time

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


# --- Faults on disk (issue 19): damaged steps, mismatched trees, failed saves (no training).


def _run_with_steps(directory, steps=(1, 2)):
    """A checkpoints/ folder with `steps` of `_tree(0) * step` (the step's own parameters)."""
    manager = checkpointing.CheckpointManager(str(directory), save_every_steps=1, keep=5, async_save=False)
    for step in steps:
        params = jax.tree.map(lambda x, s=step: jnp.asarray(x) * s, _tree(0))
        manager.save(step, params, {"step": jnp.asarray(step, jnp.int32)}, config={"model": {}}, data_state={"p": step})
    manager.close()


def _targets():
    repl = sharding.replicated(sharding.create_mesh(devices=jax.devices()[:1]))
    return _abstract(_tree(0), repl), {"step": jax.ShapeDtypeStruct((), jnp.int32, sharding=repl)}


def test_damaged_newest_step_is_set_aside_and_the_previous_restored(tmp_path, caplog):
    _run_with_steps(tmp_path)
    os.remove(tmp_path / "2" / "train_state" / "_METADATA")
    manager = checkpointing.CheckpointManager(str(tmp_path), save_every_steps=1, keep=5)
    with caplog.at_level(logging.WARNING, logger="xlsr_jax.checkpointing"):
        start = checkpointing.resume_newest_good(manager, *_targets())
    assert start.step == 1 and start.data_state == {"p": 1}
    np.testing.assert_array_equal(start.params["head"]["kernel"], _tree(0)["head"]["kernel"])
    [line] = [r.getMessage() for r in caplog.records if r.name == "xlsr_jax.checkpointing"]
    assert "step 2 is damaged (train_state/_METADATA is missing)" in line and "resuming from step 1" in line
    assert sorted(os.listdir(tmp_path)) == ["1", "damaged"] and os.listdir(tmp_path / "damaged") == ["2"]
    assert manager.all_steps() == [1]  # Orbax no longer sees it
    manager.close()


def test_no_readable_step_stops_with_every_reason_and_renames_nothing(tmp_path):
    _run_with_steps(tmp_path)
    with open(tmp_path / "1" / "data" / "metadata", "w") as f:
        f.write("garbage")
    shutil.rmtree(tmp_path / "2" / "params")
    manager = checkpointing.CheckpointManager(str(tmp_path), save_every_steps=1, keep=5)
    with pytest.raises(checkpointing.CheckpointDamagedError) as info:
        checkpointing.resume_newest_good(manager, *_targets())
    text = str(info.value)
    assert "\n" not in text and "step 2 (no params/ folder)" in text and "step 1 (data/metadata" in text
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]
    manager.close()


def test_loaders_fall_back_from_a_truncated_newest_step(tmp_path, caplog):
    _run_with_steps(tmp_path)
    data = tmp_path / "2" / "params"
    biggest = max((p for p in data.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="xlsr_jax.checkpointing"):
        params = checkpointing.read_params_numpy(str(tmp_path))
    np.testing.assert_array_equal(params["encoder"]["kernel"], _tree(0)["encoder"]["kernel"])  # step 1
    assert any("/2 is damaged" in r.getMessage() for r in caplog.records)
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]  # a loader renames nothing
    # Asked for that step itself: one line naming it and why.
    with pytest.raises(checkpointing.CheckpointDamagedError) as info:
        checkpointing.read_params_numpy(str(tmp_path / "2"))
    assert str(info.value).count("\n") == 0 and str(tmp_path / "2") in str(info.value)


def test_model_mismatch_lists_every_parameter_and_partial_init_restores_what_fits(tmp_path, caplog):
    _run_with_steps(tmp_path, steps=(1,))
    repl = sharding.replicated(sharding.create_mesh(devices=jax.devices()[:1]))
    other = {
        "encoder": {"kernel": np.zeros((16, 64), np.float32), "bias": np.zeros((64,), np.float32)},
        "head": {"kernel": np.zeros((32, 8), np.float32)},
        "extra": {"w": np.ones((3,), np.float32)},
    }
    abstract = _abstract(other, repl)
    with pytest.raises(checkpointing.ModelMismatchError) as info:
        checkpointing.check_init_matches(str(tmp_path), abstract, model_config={"hidden_size": 64}, allow_partial=False)
    text = str(info.value)
    assert "encoder/kernel: checkpoint (16, 32), model (16, 64)" in text
    assert "encoder/bias: checkpoint (32,), model (64,)" in text
    assert "extra/w: not in the checkpoint" in text and "init.partial" in text
    comparison = checkpointing.check_init_matches(str(tmp_path), abstract, allow_partial=True)
    assert comparison.matching == ("head/kernel",)
    with caplog.at_level(logging.WARNING, logger="xlsr_jax.checkpointing"):
        params = checkpointing.restore_matching(str(tmp_path), abstract, other, comparison)
    np.testing.assert_array_equal(params["head"]["kernel"], _tree(0)["head"]["kernel"])
    np.testing.assert_array_equal(params["extra"]["w"], other["extra"]["w"])
    np.testing.assert_array_equal(params["encoder"]["kernel"], other["encoder"]["kernel"])
    [line] = [r.getMessage() for r in caplog.records if r.name == "xlsr_jax.checkpointing"]
    assert "restored 1 parameters ['head/kernel']" in line and "'extra/w'" in line


def test_a_failed_write_is_one_line_with_the_path_and_the_os_error(tmp_path):
    _run_with_steps(tmp_path, steps=(1,))
    manager = checkpointing.CheckpointManager(str(tmp_path), save_every_steps=1, keep=5)
    os.makedirs(tmp_path / "2.orbax-checkpoint-tmp-1")  # what a failed write leaves behind

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "2" / "params"))

    manager._manager.save = full_disk
    with pytest.raises(checkpointing.CheckpointSaveError) as info:
        manager.save(2, jax.tree.map(jnp.asarray, _tree(0)), {"step": jnp.asarray(2)}, config={}, data_state=None)
    text = str(info.value)
    assert text.count("\n") == 0
    assert f"checkpoint step 2 could not be written under {tmp_path}" in text and str(tmp_path / "2" / "params") in text
    assert "No space left on device" in text and "ENOSPC" in text
    assert sorted(os.listdir(tmp_path)) == ["1"]
    manager.close()


def test_a_read_only_checkpoint_folder_fails_at_once_without_waiting(tmp_path):
    # Orbax's own threads would wait ~5 minutes on a signal when the step folder cannot be made.
    _run_with_steps(tmp_path, steps=(1,))
    ok = (
        os.geteuid() == 0
        and subprocess.run(["mount", "--bind", tmp_path, tmp_path], capture_output=True).returncode == 0
    )
    if not ok:
        pytest.skip("needs root to remount a folder read-only (CI runs as root)")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", tmp_path], check=True)
        manager = checkpointing.CheckpointManager(str(tmp_path), save_every_steps=1, keep=5)
        start = time.time()
        with pytest.raises(checkpointing.CheckpointSaveError) as info:
            manager.save(2, jax.tree.map(jnp.asarray, _tree(0)), {"step": jnp.asarray(2)}, config={}, data_state=None)
        manager.close()
        assert time.time() - start < 10
        assert str(info.value) == (
            f"checkpoint step 2 could not be written: cannot write to {tmp_path}: [Errno 30] Read-only file "
            "system (EROFS); the newest finished checkpoint is kept"
        )
    finally:
        subprocess.run(["umount", "-l", tmp_path], check=False)
    assert sorted(os.listdir(tmp_path)) == ["1"]


def test_orbax_to_hf_names_a_damaged_checkpoint_in_one_line(tmp_path, capsys):
    from xlsr_jax.convert.__main__ import main as convert

    run = tmp_path / "run"
    fixture = os.path.join(
        os.path.dirname(os.path.dirname(__file__)), "fixtures", "checkpoints_3b8a2e9", "pretrain_run"
    )
    shutil.copytree(fixture, run)
    data = run / "checkpoints" / "1" / "params"
    arrays = [p for p in data.rglob("*") if p.is_file() and p.parent.name == "d"]  # array data files
    biggest = max(arrays, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:100])
    assert convert(["orbax-to-hf", str(run), str(tmp_path / "hf_out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert (
        err.startswith(f"error: {run}: no readable checkpoint ({run / 'checkpoints' / '1'}: ") and "OUT_OF_RANGE" in err
    )
    assert not (tmp_path / "hf_out").exists()
