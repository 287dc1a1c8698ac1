"""A 2-process jax.distributed run on localhost through `train.py`, on the shipped demo corpus."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.trainer_testlib import REPO, compile_cache_env, read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # several JAX processes training together


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_and_checkpoint(tmp_path, tmp_path_factory):
    workdir = str(tmp_path / "run")
    port = _free_port()
    env = dict(os.environ)
    env.update(compile_cache_env(str(tmp_path_factory.getbasetemp() / "jax_compile_cache")))
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"  # one device per process
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    common = [
        sys.executable,
        os.path.join(REPO, "train.py"),
        "--config",
        os.path.join(REPO, "configs", "demo.py") + ":steps=4,batch=4",
        "--workdir",
        workdir,
        "--config.train.log_every=1",
        "--config.ckpt.every_steps=2",
        "--config.eval.every_steps=0",
        "--config.train.progress_bar=False",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
    ]
    procs = [
        subprocess.Popen(
            common + [f"--process_id={i}"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=540)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-6000:]}"
    assert "process 0/2" in outputs[0] and "process 1/2" in outputs[1]

    # Process 0 writes the metrics of the global (2-process) batch.
    metrics = read_metrics(workdir)
    assert sorted(metrics) == [1, 2, 3, 4]
    # Both processes' data positions are in each checkpoint, plus the resolved config.
    ckpt = os.path.join(workdir, "checkpoints")
    assert sorted(int(s) for s in os.listdir(ckpt) if s.isdigit()) == [2, 4]
    with open(os.path.join(ckpt, "4", "data", "metadata"), encoding="utf-8") as f:
        data = json.load(f)
    assert data["process_count"] == 2 and len(data["states"]) == 2
    assert all(isinstance(state, dict) and state for state in data["states"])
    with open(os.path.join(ckpt, "4", "config", "metadata"), encoding="utf-8") as f:
        assert json.load(f)["train"]["total_steps"] == 4
