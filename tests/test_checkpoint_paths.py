"""Every command that takes a checkpoint accepts every path a user has, and refuses others in one line.

`checkpointing.resolve` decides what a path is (an export, a training --workdir, its checkpoints/
folder, a step folder, a params folder); a run gives its newest finished step and the command
says which one it loaded. Anything else is answered with one `error:` line naming what was
expected, exit status 1, no traceback. Uses the small checkpoints of
tests/fixtures/checkpoints_3b8a2e9 (a 1-layer, 16-wide model), so nothing here trains.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from xlsr_jax import checkpointing

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "checkpoints_3b8a2e9")
RUN = os.path.join(FIXTURE, "pretrain_run")
LID_RUN = os.path.join(FIXTURE, "lid_run")
EXPORT = os.path.join(FIXTURE, "ctc_export")


@pytest.mark.parametrize(
    "path,kind,step",
    [
        (RUN, "run", 1),
        (RUN + "/", "run", 1),
        (os.path.join(RUN, "checkpoints"), "checkpoints", 1),
        (os.path.join(RUN, "checkpoints", "1"), "step", 1),
        (os.path.join(RUN, "checkpoints", "1", "params"), "step", 1),
        (EXPORT, "export", None),
        (os.path.join(EXPORT, "params"), "export", None),
    ],
    ids=["run", "run/", "checkpoints", "step", "step/params", "export", "export/params"],
)
def test_resolve_says_what_a_path_is(path, kind, step):
    found = checkpointing.resolve(path)
    assert (found.kind, found.step) == (kind, step)
    assert os.path.isdir(found.params_dir) and found.params_dir.endswith("params")
    if kind != "export":
        assert found.step_dir == os.path.join(RUN, "checkpoints", "1")
        assert found.describe().startswith("step 1")


def test_resolve_picks_the_newest_finished_step(tmp_path):
    run = tmp_path / "run"
    for step in (5, 20, 100):
        shutil.copytree(os.path.join(RUN, "checkpoints", "1"), run / "checkpoints" / str(step))
    os.makedirs(run / "checkpoints" / "200.orbax-checkpoint-tmp-7")  # a save still in flight
    (run / "checkpoints" / "300").mkdir()  # no params: not a finished checkpoint
    found = checkpointing.resolve(str(run))
    assert (found.kind, found.step) == ("run", 100)
    assert "step 100 (the newest) of" in found.describe()
    assert checkpointing.read_config(str(run), step=5)["task"] == "pretrain"


def _bad_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    (tmp_path / "fresh_run" / "checkpoints").mkdir(parents=True)  # started, nothing saved yet
    (tmp_path / "fresh_run" / "config.json").write_text("{}")
    (tmp_path / "file.txt").write_text("x")
    return {
        "missing": str(tmp_path / "missing"),
        "empty": str(tmp_path / "empty"),
        "unrelated": str(tmp_path / "notes"),
        "run without a checkpoint": str(tmp_path / "fresh_run"),
        "a file": str(tmp_path / "file.txt"),
    }


def test_resolve_refuses_anything_else_in_one_line(tmp_path):
    for what, path in _bad_paths(tmp_path).items():
        with pytest.raises(checkpointing.CheckpointNotFoundError) as info:
            checkpointing.resolve(path)
        message = str(info.value)
        assert "\n" not in message and path in message, what
        assert "expected an exported model (model.json + params/), a training --workdir" in message, what
    with pytest.raises(checkpointing.CheckpointNotFoundError, match="without a finished checkpoint yet"):
        checkpointing.resolve(str(tmp_path / "fresh_run"))


def _clip(tmp_path) -> str:
    path = str(tmp_path / "clip.wav")
    t = np.arange(8000) / 16000.0
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return path


def _commands(ckpt: str, tmp_path) -> dict:
    from xlsr_jax import extract, identify, transcribe
    from xlsr_jax.convert.__main__ import main as convert

    clip = _clip(tmp_path)
    return {
        "transcribe": lambda: transcribe.main(["--ckpt", ckpt, clip]),
        "identify": lambda: identify.main(["--ckpt", ckpt, clip]),
        "extract": lambda: extract.main(["--ckpt", ckpt, "--out", str(tmp_path / "f.npz"), clip]),
        "orbax-to-hf": lambda: convert(["orbax-to-hf", ckpt, str(tmp_path / "hf_out")]),
    }


def test_every_command_refuses_a_bad_path_in_one_line(tmp_path, capsys):
    for what, path in _bad_paths(tmp_path).items():
        for name, run in _commands(path, tmp_path).items():
            assert run() == 1, (name, what)
            err = capsys.readouterr().err.strip()
            assert "Traceback" not in err and len(err.splitlines()) == 1, (name, what, err)
            assert err.startswith("error: ") and "expected an exported model" in err, (name, what, err)


def test_commands_take_a_workdir_and_say_which_step_they_loaded(tmp_path, capsys):
    from xlsr_jax import extract, identify

    clip = _clip(tmp_path)
    assert identify.main(["--ckpt", LID_RUN, "--top_k", "2", clip]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(clip + "\t") and {"es", "sw"} <= set(out.split())
    assert f"loaded step 1 (the newest) of {LID_RUN}" in err
    assert extract.main(["--ckpt", RUN, "--layer", "final", "--out", str(tmp_path / "f.npz"), clip]) == 0
    assert f"loaded step 1 (the newest) of {RUN}" in capsys.readouterr().err
    assert np.load(tmp_path / "f.npz")["features_0"].shape[1] == 16
    # A pretraining checkpoint is not a CTC model: one line saying so.
    from xlsr_jax import transcribe

    assert transcribe.main(["--ckpt", RUN, clip]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "not a CTC model" in err[-1]


def test_orbax_to_hf_takes_a_workdir(tmp_path, capsys):
    from xlsr_jax.convert.__main__ import main as convert

    assert convert(["orbax-to-hf", RUN, str(tmp_path / "hf_out")]) == 0
    assert os.path.isfile(tmp_path / "hf_out" / "model.safetensors")
    assert f"loaded step 1 (the newest) of {RUN}" in capsys.readouterr().err


def test_init_checkpoint_takes_a_workdir():
    """config.init.checkpoint = a pretraining --workdir: the fine-tuning model gets its encoder."""
    import flax.linen as nn
    import jax

    from xlsr_jax.models import Wav2Vec2Config, Wav2Vec2ForCTC
    from xlsr_jax.tasks import finetune

    config = Wav2Vec2Config.from_dict({**checkpointing.read_config(RUN)["model"], "vocab_size": 6})
    model = Wav2Vec2ForCTC(config)
    audio = np.zeros((1, 4000), np.float32)
    fresh = jax.tree.map(np.asarray, nn.unbox(model.init(jax.random.key(0), audio, None, deterministic=True)["params"]))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh)
    params = finetune.restore_init_params(RUN, abstract, fresh)
    saved = checkpointing.read_params_numpy(RUN)
    for a, b in zip(jax.tree.leaves(params["wav2vec2"]), jax.tree.leaves(saved["wav2vec2"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    np.testing.assert_array_equal(np.asarray(params["lm_head"]["kernel"]), fresh["lm_head"]["kernel"])
