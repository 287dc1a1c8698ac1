"""Tests of xlsr_jax.fileio and of the run directory on a gs:// workdir (bucket mocked locally).

`gcs_mock` makes gs://... resolve to a local folder: etils.epath (config, metrics, eval
reports, checkpoint config reads) through `etils.epath.testing.mock_epath`; TensorFlow's event
writer and Orbax's CheckpointManager, which reach GCS through their own clients (TF gfile,
tensorstore), get the translated path handed in. Everything else runs the real remote branch.
"""

from __future__ import annotations

import contextlib
import json
import os
import types
from unittest import mock

import numpy as np
import pytest

from tests.trainer_testlib import run_with_devices
from xlsr_jax import checkpointing, decoding, fileio, metrics
from xlsr_jax.tasks import lid


def _to_local(root: str, path):
    """gs://bucket/x -> <root>/bucket/x; other paths unchanged."""
    if isinstance(path, str | os.PathLike) and os.fspath(path).startswith("gs://"):
        return os.path.join(root, os.fspath(path)[len("gs://") :])
    return path


@contextlib.contextmanager
def gcs_mock(root: str):
    """Redirects gs://... to `root` for epath, tf.summary's file writer and Orbax's manager."""
    import orbax.checkpoint as ocp
    import tensorflow as tf
    from etils.epath import gpath
    from etils.epath import testing as epath_testing

    def redirect(original, path, *args, **kwargs):
        args = [_to_local(root, a) for a in args]
        return original(_to_local(root, path), *args, **kwargs)

    names = ("copy", "exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open", "remove", "rename")
    names += ("replace", "rmtree", "stat", "walk")
    real_writer, real_manager = tf.summary.create_file_writer, ocp.CheckpointManager
    with (
        epath_testing.mock_epath(**dict.fromkeys(names, redirect)),
        # With TensorFlow installed, this etils picks its tf.io.gfile backend for gs:// ahead of
        # the (mocked) prefix table; claim TF is absent so the mock backend is used.
        mock.patch.object(gpath, "_is_tf_installed", lambda: False),
        mock.patch.object(
            tf.summary, "create_file_writer", lambda d, *a, **k: real_writer(_to_local(root, d), *a, **k)
        ),
        mock.patch.object(ocp, "CheckpointManager", lambda d, *a, **k: real_manager(_to_local(root, d), *a, **k)),
    ):
        yield


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """A mocked gs:// under tmp_path/gcs, with the cwd in tmp_path/cwd (to catch a local 'gs:')."""
    root = tmp_path / "gcs"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with gcs_mock(str(root)):
        yield root
    assert os.listdir(cwd) == [], "something wrote a local copy of a gs:// path"


def test_is_remote_and_abspath():
    assert fileio.is_remote("gs://bucket/run") and not fileio.is_remote("/tmp/run")
    assert not fileio.is_remote("file:///tmp/run") and not fileio.is_remote("run")
    assert fileio.abspath("gs://bucket/run") == "gs://bucket/run"
    assert fileio.abspath("run") == os.path.join(os.getcwd(), "run")
    assert fileio.join("gs://bucket/run", "eval", "x.json") == "gs://bucket/run/eval/x.json"


def test_local_helpers_write_atomically(tmp_path):
    path = str(tmp_path / "a" / "b.json")
    fileio.write_text(path, "one")
    fileio.write_text(path, "two")  # replaces
    assert fileio.read_text(path) == "two"
    assert os.listdir(tmp_path / "a") == ["b.json"]  # no .tmp left behind
    assert fileio.isfile(path) and not fileio.isdir(path) and fileio.isdir(str(tmp_path / "a"))
    assert fileio.listdir(str(tmp_path / "a")) == ["b.json"] and not fileio.exists(str(tmp_path / "c"))


def test_atomic_writers_follow_the_umask(tmp_path):
    # mkstemp/mkdtemp create 0600/0700; what they write must have the modes open()/mkdir give.
    previous = os.umask(0o027)
    try:
        with fileio.atomic_dir(tmp_path / "export") as tmp:
            with open(os.path.join(tmp, "x"), "w") as f:
                f.write("x")
        fileio.write_text(str(tmp_path / "c.json"), "{}")
    finally:
        os.umask(previous)
    assert (os.stat(tmp_path / "export").st_mode & 0o777) == 0o750
    assert (os.stat(tmp_path / "c.json").st_mode & 0o777) == 0o640


def test_metrics_jsonl_drops_the_steps_a_resume_trains_again(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    with open(path, "w") as f:
        for step in (1, 2, 3, 4):
            f.write(json.dumps({"step": step, "train/loss": float(step)}) + "\n")
        f.write('{"step": 5, "train/lo')  # cut short by a kill
    writer = metrics.MetricWriter(
        str(tmp_path / "tb"), total_steps=6, initial_step=2, progress_bar=False, jsonl_path=path
    )
    for step in (3, 4):
        writer.write_scalars(step, {"train/loss": 10.0 + step})
    writer.write_scalars(4, {"eval/loss": 1.0})
    writer.close()
    assert metrics.read_jsonl(path) == {
        1: {"train/loss": 1.0},
        2: {"train/loss": 2.0},
        3: {"train/loss": 13.0},
        4: {"train/loss": 14.0, "eval/loss": 1.0},
    }


def test_remote_helpers_land_in_the_bucket(bucket):
    fileio.makedirs("gs://bucket/run/eval")
    fileio.write_text("gs://bucket/run/eval/r.json", '{"a": 1}')
    assert (bucket / "bucket" / "run" / "eval" / "r.json").read_text() == '{"a": 1}'
    assert fileio.read_text("gs://bucket/run/eval/r.json") == '{"a": 1}'
    assert fileio.isfile("gs://bucket/run/eval/r.json") and fileio.isdir("gs://bucket/run/eval")
    assert fileio.listdir("gs://bucket/run") == ["eval"]
    assert not fileio.exists("gs://bucket/run/missing")


@pytest.mark.parametrize("remote", [False, True])
def test_jsonl_appender_keeps_earlier_lines_across_reopen(bucket, tmp_path, remote):
    path = "gs://bucket/run/metrics.jsonl" if remote else str(tmp_path / "local" / "metrics.jsonl")
    first = fileio.JsonlAppender(path)
    first.write('{"step": 1}')
    first.flush()
    first.write('{"step": 2}')
    first.close()
    second = fileio.JsonlAppender(path)  # a resumed run appends
    second.write('{"step": 3}')
    second.close()
    second.close()  # a second close (the trainer's error path) is harmless
    text = (bucket / "bucket" / "run" / "metrics.jsonl").read_text() if remote else fileio.read_text(path)
    assert [json.loads(line)["step"] for line in text.splitlines()] == [1, 2, 3]


def _event_scalars(logdir: str) -> dict[str, tuple[int, float]]:
    """{tag: (step, value)} of the scalars in all event files under logdir (TF's reader)."""
    import tensorflow as tf

    out = {}
    for name in tf.io.gfile.listdir(logdir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
            for v in event.summary.value:
                value = tf.make_ndarray(v.tensor) if v.HasField("tensor") else v.simple_value
                out[v.tag] = (event.step, float(value))
    return out


@pytest.mark.parametrize("logdir_kind", ["local", "remote"])
def test_metric_writer_event_file_and_jsonl(tmp_path, logdir_kind):
    # ram:// is TensorFlow's in-memory filesystem: a real non-local path for the TF branch.
    logdir = str(tmp_path / "tb") if logdir_kind == "local" else f"ram://{tmp_path.name}/tb"
    jsonl = str(tmp_path / "metrics.jsonl")
    writer = metrics.MetricWriter(logdir, total_steps=10, progress_bar=False, jsonl_path=jsonl)
    writer.write_scalars(3, {"train/loss": np.float32(1.5), "train/lr": 0.25})
    writer.close()
    writer.close()  # the trainer closes again on its error path
    scalars = _event_scalars(logdir)
    assert scalars["train/loss"] == (3, 1.5) and scalars["train/lr"] == (3, 0.25)
    assert json.loads(fileio.read_text(jsonl)) == {"step": 3, "train/loss": 1.5, "train/lr": 0.25}


def test_eval_reports_and_read_config_on_the_bucket(bucket):
    decoding.write_report("gs://bucket/run/eval/ctc_5.json", {"en": decoding.ErrorCounts(1, 4, 2, 10, 1)}, step=5)
    report = json.loads((bucket / "bucket" / "run" / "eval" / "ctc_5.json").read_text())
    assert report["step"] == 5 and report["per_language"]["en"]["words"] == 4

    records = [({"language": np.array([0, 1, 1])}, {"probs": np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])})]
    task = types.SimpleNamespace(languages=["en", "fr"])
    metrics_out = lid.LidTask.eval_report(task, records, 7, "gs://bucket/run")
    saved = json.loads((bucket / "bucket" / "run" / "eval" / "lid_7.json").read_text())
    assert saved["step"] == 7 and saved["confusion"] == [[1, 0], [1, 1]]
    assert metrics_out["accuracy"] == pytest.approx(2 / 3)

    # A checkpoint root laid out as Orbax writes it: <root>/<step>/{params,config/metadata}.
    for step in (3, 5):
        fileio.write_text(f"gs://bucket/run/checkpoints/{step}/params/_METADATA", "{}")
        fileio.write_text(f"gs://bucket/run/checkpoints/{step}/config/metadata", json.dumps({"step": step}))
    assert checkpointing.read_config("gs://bucket/run/checkpoints") == {"step": 5}  # newest
    assert checkpointing.read_config("gs://bucket/run/checkpoints", step=3) == {"step": 3}
    with pytest.raises(FileNotFoundError, match="expected an exported model"):
        checkpointing.read_config("gs://bucket/nothing")


@pytest.mark.slow
def test_trainer_run_and_resume_on_gs_workdir(tmp_path):
    """A tiny run with workdir gs://bucket/run writes everything to the bucket and resumes."""
    root, cwd = tmp_path / "gcs", tmp_path / "cwd"
    cwd.mkdir()
    code = f"""
import logging, os, sys, jax
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from tests.test_fileio import gcs_mock
from tests.trainer_testlib import tiny_config, synthetic_builder
from xlsr_jax import trainer
os.chdir({str(cwd)!r})
with gcs_mock({str(root)!r}):
    for steps in (2, 4):
        cfg = tiny_config(total_steps=steps)
        trainer.train_and_evaluate(cfg, "gs://bucket/run", devices=jax.devices()[:1], input_builder=synthetic_builder())
"""
    out = run_with_devices(code, devices=1)
    run = root / "bucket" / "run"
    assert os.listdir(cwd) == [], "a local 'gs:' directory was created"
    assert "resumed from checkpoint step 2" in out
    assert json.loads((run / "config.json").read_text())["train"]["total_steps"] == 4
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == [1, 2, 3, 4] and steps == sorted(steps)  # resumed, not restarted
    assert {"2", "4"} <= set(os.listdir(run / "checkpoints"))
    assert os.listdir(run / "tensorboard")
