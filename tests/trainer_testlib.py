"""Shared helpers for the trainer tests: a synthetic resumable input and a tiny config.

The synthetic input stands in for data_pipelines in tests that check the *trainer*
(sharding, resume, skipping): its batches are a pure function of (seed, position, process),
so an exact stream position can be saved and restored, and NaNs can be injected on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SyntheticAudio:
    """Deterministic, resumable batches of tone-plus-noise audio with some right padding."""

    def __init__(
        self,
        batch_size: int,
        num_samples: int,
        seed: int,
        process_index: int,
        nan_at: tuple[int, ...] = (),
        sigterm_at: int | None = None,
    ):
        self.batch_size, self.num_samples, self.seed = batch_size, num_samples, seed
        self.process_index, self.position = process_index, 0
        self.nan_at, self.sigterm_at = set(nan_at), sigterm_at

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.position, self.process_index])
        t = np.arange(self.num_samples) / 16000.0
        freq = rng.uniform(100, 400, (self.batch_size, 1))
        audio = np.sin(2 * np.pi * freq * t) + 0.3 * rng.standard_normal((self.batch_size, self.num_samples))
        lengths = rng.integers(self.num_samples * 3 // 4, self.num_samples + 1, self.batch_size)
        padding = np.arange(self.num_samples)[None, :] >= lengths[:, None]
        audio = np.where(padding, 0.0, audio).astype(np.float32)
        if self.position in self.nan_at:
            audio[0, 100] = np.nan
        if self.sigterm_at is not None and self.position == self.sigterm_at:
            import signal

            os.kill(os.getpid(), signal.SIGTERM)
        self.position += 1
        return {"audio": audio, "padding_mask": padding, "language": np.zeros(self.batch_size, np.int32)}

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = int(state["position"])


def synthetic_builder(batch_size=8, num_samples=4000, **kwargs):
    """An `input_builder` for `trainer.train_and_evaluate` yielding SyntheticAudio."""

    def build(data_cfg, *, split, task, process_index, process_count):
        del data_cfg, task
        seed = 0 if split == "train" else 1
        extra = kwargs if split == "train" else {}
        return SyntheticAudio(batch_size // process_count, num_samples, seed, process_index, **extra)

    return build


def tiny_config(total_steps: int = 6) -> ml_collections.ConfigDict:
    """The tiny model with a short schedule, no progress bar, logs every step."""
    from configs import common
    from xlsr_jax.models import get_preset

    model = get_preset("tiny", feat_proj_dropout=0.0, feat_quantizer_dropout=0.0).to_dict()
    config = common.pretraining_config(
        model=model,
        data=ml_collections.ConfigDict({"source": "synthetic"}),
        total_steps=total_steps,
        lr=2e-3,
        warmup_steps=2,
        gumbel_temperature=(2.0, 0.5, 0.995),
        clip_grad_norm=10.0,
    )
    # The schedule's length is fixed, not tied to total_steps: every test run then compiles
    # the same program and the persistent compilation cache serves all but the first.
    config.optim = ml_collections.ConfigDict(config.optim.to_dict())  # a copy without the tie
    config.optim.total_steps = 100
    config.train.log_every = 1
    config.train.transfer_guard = "disallow"  # no implicit host<->device copies in the hot path
    config.train.progress_bar = False
    config.ckpt.every_steps = 1000
    config.ckpt.async_save = True
    config.eval.every_steps = 0
    return config


def compile_cache_env(cache_dir: str) -> dict[str, str]:
    """Environment that makes JAX reuse compiled programs across the test subprocesses.

    The tiny model's train step takes tens of seconds to compile on a 2-core CPU; the runs of
    one test session (uninterrupted vs resumed, NaN, ...) compile identical programs.
    """
    return {
        "JAX_COMPILATION_CACHE_DIR": cache_dir,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


def read_metrics(workdir: str) -> dict[int, dict[str, float]]:
    """The metrics.jsonl of a run: step -> {name: value} (later writes at a step merge in)."""
    import json

    out: dict[int, dict[str, float]] = {}
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            out.setdefault(row.pop("step"), {}).update(row)
    return out


def run_with_devices(code: str, devices: int = 8, timeout: int = 600, cache_dir: str | None = None) -> str:
    """Runs `code` in a fresh Python whose JAX sees `devices` simulated CPU devices."""
    env = dict(os.environ)
    if cache_dir:
        env.update(compile_cache_env(cache_dir))
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout
