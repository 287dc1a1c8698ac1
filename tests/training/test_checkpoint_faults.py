"""Faults on disk (issue 19): a damaged newest step, a model that does not fit its checkpoint, a
full disk, SIGKILL during a save. Tiny model, synthetic input, a few steps per run; the runs of a
test share one subprocess (and the session's persistent compilation cache).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tests.trainer_testlib import REPO, compile_cache_env, run_with_devices

pytestmark = pytest.mark.slow  # tiny-model training runs in subprocesses

PRELUDE = """
import logging, json, os, shutil, sys, numpy as np, jax
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
from tests.trainer_testlib import tiny_config, synthetic_builder
from xlsr_jax import trainer, checkpointing

def config(total_steps, **model):
    cfg = tiny_config(total_steps=total_steps)
    cfg.ckpt.every_steps = 2
    cfg.ckpt.keep = 3
    cfg.ckpt.async_save = True
    for k, v in model.items():
        setattr(cfg.model, k, v)
    return cfg

def train(cfg, workdir, **kwargs):
    builder = synthetic_builder(**kwargs)
    return trainer.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1], input_builder=builder)
"""


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp() / "jax_compile_cache")


def _params(path):
    from xlsr_jax import checkpointing

    return checkpointing.read_params_numpy(path)


def _assert_same_params(a, b):
    import jax

    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


def _largest_file(folder):
    files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
    return max(files, key=os.path.getsize)


# Each kind of damage of the newest step (4) -> the reason the one warning line must give.
DAMAGE = {
    "truncated_data_file": "OUT_OF_RANGE",
    "no_train_state_metadata": "train_state/_METADATA is missing",
    "no_params": "no params/ folder",
    "garbage_data_position": "data/metadata (the input position) is not valid JSON",
    "wrong_data_position": "does not hold one position per process",
}


def _damage(step_dir, kind):
    if kind == "truncated_data_file":
        path = _largest_file(os.path.join(step_dir, "params"))
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif kind == "no_train_state_metadata":
        os.remove(os.path.join(step_dir, "train_state", "_METADATA"))
    elif kind == "no_params":
        shutil.rmtree(os.path.join(step_dir, "params"))
    elif kind == "garbage_data_position":
        with open(os.path.join(step_dir, "data", "metadata"), "wb") as f:
            f.write(b"\x00\x17garbage{")
    elif kind == "wrong_data_position":
        with open(os.path.join(step_dir, "data", "metadata"), "w") as f:
            json.dump({"process_count": 1, "states": [[1, 2], [3]]}, f)


def test_damaged_newest_step_is_set_aside_and_the_previous_one_resumes(tmp_path, jax_cache):
    base, clean = str(tmp_path / "base"), str(tmp_path / "clean")
    run_with_devices(PRELUDE + f"train(config(4), {base!r})", devices=1, cache_dir=jax_cache)
    assert sorted(os.listdir(os.path.join(base, "checkpoints"))) == ["2", "4"]
    # The reference: step 4 removed by hand, resumed from step 2 to step 6.
    shutil.copytree(base, clean)
    shutil.rmtree(os.path.join(clean, "checkpoints", "4"))
    runs = {}
    for kind in DAMAGE:
        runs[kind] = str(tmp_path / kind)
        shutil.copytree(base, runs[kind])
        _damage(os.path.join(runs[kind], "checkpoints", "4"), kind)
    out = run_with_devices(
        PRELUDE
        + f"""
train(config(6), {clean!r})
for kind, workdir in {runs!r}.items():
    print("RUN", kind, flush=True)
    train(config(6), workdir)
""",
        devices=1,
        cache_dir=jax_cache,
    )
    want = _params(os.path.join(clean, "checkpoints", "6"))
    sections = out.split("RUN ")[1:]
    assert len(sections) == len(DAMAGE)
    for section in sections:
        kind = section.split()[0]
        workdir = runs[kind]
        warnings = [line for line in section.splitlines() if "is damaged" in line]
        assert len(warnings) == 1, section
        assert "step 4" in warnings[0] and DAMAGE[kind] in warnings[0] and "resuming from step 2" in warnings[0]
        # Set aside, not deleted; Orbax and the loaders see only good steps.
        assert os.path.isdir(os.path.join(workdir, "checkpoints", "damaged", "4")), kind
        assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4", "6", "damaged"], kind
        _assert_same_params(_params(os.path.join(workdir, "checkpoints", "6")), want)
        # metrics.jsonl: each step once although steps 3 and 4 were logged before the restart.
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            steps = [json.loads(line)["step"] for line in f]
        assert steps == [1, 2, 3, 4, 5, 6], (kind, steps)


def test_model_that_does_not_fit_its_checkpoint_is_named_before_anything_is_written(tmp_path, jax_cache):
    run = str(tmp_path / "run")
    out = run_with_devices(
        PRELUDE
        + f"""
train(config(2), {run!r})
before = open(os.path.join({run!r}, "config.json")).read()
for field, value in (("hidden_size", 32), ("num_hidden_layers", 3)):
    try:
        train(config(4, **{{field: value}}), {run!r})
    except checkpointing.ModelMismatchError as e:
        print("MISMATCH", field, json.dumps(str(e)))
    assert open(os.path.join({run!r}, "config.json")).read() == before, "config.json changed"
# init.checkpoint from the 2-layer run into 1 and 3 layers: an error unless init.partial.
for layers in (1, 3):
    cfg = config(0, num_hidden_layers=layers, scan_layers=False)
    cfg.init.checkpoint = {run!r}
    try:
        train(cfg, {run!r} + f"_init{{layers}}")
    except checkpointing.ModelMismatchError as e:
        print("INIT", layers, json.dumps(str(e)))
""",
        devices=1,
        cache_dir=jax_cache,
    )
    found = {}
    for line in out.splitlines():
        if line.startswith(("MISMATCH", "INIT")):
            tag, key, text = line.split(" ", 2)
            found[(tag, key)] = json.loads(text)
    hidden = found[("MISMATCH", "hidden_size")]
    assert "model.hidden_size: checkpoint 64, this run 32" in hidden
    # Every differing parameter with both shapes, not the first one Orbax trips over.
    shape_lines = [line for line in hidden.splitlines() if ": checkpoint (" in line]
    assert len(shape_lines) > 10 and any("(64," in line and "(32," in line for line in shape_lines)
    layers = found[("MISMATCH", "num_hidden_layers")]
    assert "model.num_hidden_layers: checkpoint 2, this run 3" in layers
    assert len(layers) < 5_000 and "encoder/layers_2/attention/k_proj/kernel: not in the checkpoint" in layers
    for n in (1, 3):
        text = found[("INIT", str(n))]
        assert f"model.num_hidden_layers: checkpoint 2, this run {n}" in text and "init.partial" in text
    assert "in the checkpoint, not in the model" in found[("INIT", "1")]
    assert "not in the checkpoint" in found[("INIT", "3")]
    assert not os.path.exists(run + "_init1/checkpoints/1")


def _train_script(workdir, total_steps, every_steps, extra=""):
    return textwrap.dedent(
        PRELUDE
        + f"""
cfg = config({total_steps})
cfg.ckpt.every_steps = {every_steps}
{extra}
try:
    train(cfg, {workdir!r})
except checkpointing.CheckpointSaveError as e:
    print("SAVE_ERROR", e, flush=True)
    sys.exit(3)
print("DONE", flush=True)
"""
    )


def _env(jax_cache):
    env = dict(os.environ)
    env.update(compile_cache_env(jax_cache))
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _can_mount_tmpfs(path):
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return False
    os.makedirs(path, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", path], capture_output=True).returncode == 0
    return ok


def test_full_disk_stops_the_run_at_once_and_keeps_the_last_checkpoint(tmp_path, jax_cache):
    mount = str(tmp_path / "small_disk")
    if not _can_mount_tmpfs(mount):
        pytest.skip("needs root to mount a 3 MB tmpfs (CI runs as root)")
    try:
        # A tiny-model checkpoint is ~2.2 MB: step 4 fits on 3 MB, step 8 does not.
        workdir = os.path.join(mount, "run")
        start = time.time()
        proc = subprocess.run(
            [sys.executable, "-c", _train_script(workdir, 16, 4)],
            env=_env(jax_cache),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        elapsed = time.time() - start
        assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
        lines = [line for line in proc.stdout.splitlines() if line.startswith("SAVE_ERROR")]
        assert len(lines) == 1
        assert "checkpoint step 8 could not be written" in lines[0], lines[0]
        assert "[Errno 28] No space left on device (ENOSPC)" in lines[0] and workdir in lines[0]
        names = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
        # The last good checkpoint; the failed step's temporary folder is removed (Orbax's writer
        # threads can still add to it while the process exits; the next run removes any rest).
        assert [n for n in names if ".orbax-checkpoint-tmp" not in n] == ["4"], names
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            last_step = [json.loads(line)["step"] for line in f][-1]
        # Stopped once the background write had failed: at the first step after it ended (at the
        # latest at the next save, if the write took a whole interval), never a save later.
        assert last_step <= 12, last_step
        assert elapsed < 240, elapsed
        from xlsr_jax import checkpointing

        assert checkpointing.step_problem(os.path.join(workdir, "checkpoints", "4")) is None
        # Space freed: the same command resumes from step 4 and finishes; nothing left behind.
        subprocess.run(["mount", "-o", "remount,size=32m", mount], check=True)
        proc = subprocess.run(
            [sys.executable, "-c", _train_script(workdir, 16, 4)],
            env=_env(jax_cache),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
        names = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
        assert names == ["12", "16", "8"], names
    finally:
        subprocess.run(["umount", "-l", mount], check=False)


def test_unwritable_workdir_stops_before_compiling(tmp_path, jax_cache):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = subprocess.run(
        [sys.executable, "-c", _train_script(str(blocker / "run"), 2, 2)],
        env=_env(jax_cache),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("SAVE_ERROR")][0]
    assert f"cannot write to {blocker / 'run' / 'checkpoints'}" in line and "Not a directory" in line


def test_sigkill_during_a_save_then_restart_is_bit_identical(tmp_path, jax_cache):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    env = _env(jax_cache)
    # Uninterrupted reference.
    subprocess.run([sys.executable, "-c", _train_script(straight, 6, 2)], env=env, cwd=REPO, check=True, timeout=600)
    # The killed run announces each asynchronous save as it starts; this process sends SIGKILL
    # by PID as soon as the step-4 save is under way.
    announce = """
_save = checkpointing.CheckpointManager.save
def save(self, step, *args, **kwargs):
    started = _save(self, step, *args, **kwargs)
    if started:
        print("SAVING", step, flush=True)
        import time; time.sleep(5)  # the background write runs meanwhile
    return started
checkpointing.CheckpointManager.save = save
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", _train_script(killed, 6, 2, extra=announce)],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("SAVING 4"):
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    subprocess.run([sys.executable, "-c", _train_script(killed, 6, 2)], env=env, cwd=REPO, check=True, timeout=600)
    _assert_same_params(_params(os.path.join(killed, "checkpoints")), _params(os.path.join(straight, "checkpoints")))
    names = os.listdir(os.path.join(killed, "checkpoints"))
    assert not [n for n in names if "tmp" in n], names
