"""The README's fine-tuning quickstart, run as a user runs it: convert, train to a --workdir, then
every command that takes a checkpoint on that workdir, exactly as the README writes them.

The commands are read from the README block itself (so the test follows the README). They run in
a scratch folder holding links to `train.py` and `configs/`, as in a checkout. What a CPU test
cannot have is replaced, and only that:
  * `path/to/wav2vec2-xls-r-300m` is a randomly initialised tiny model saved as a transformers
    folder (same layout as the hub's), and `clip1.mp3`, `clip2.wav`, `clip.flac`, `a.wav`,
    `b.flac` are clips of the shipped corpus;
  * the training command trains that tiny model (`preset=tiny`) for 1 update on the shipped
    corpus (`path=` the shipped Common Voice-layout corpus) without the periodic evaluation;
  * `runs/lid` (which the README trains with configs/finetune/demo_lid.py) is trained the same way;
  * the extract line's placeholder `DIR` is `runs/sw`, and `--layer 12` is `--layer 2` (the tiny
    model has 2 layers);
  * `fairseq-to-orbax` is not run here (tests/convert/test_convert_fairseq.py runs it).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "data_pipelines", "demo_corpus")


def readme_block(title: str) -> list[str]:
    """The commands of the ```bash block after `title` (continuation lines joined, comments dropped)."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    block = text[text.index(title) :].split("```bash\n", 1)[1].split("```", 1)[0]
    block = re.sub(r"\\\n\s*", "", block)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def readme_line(pattern: str) -> str:
    """The README's inline command matching `pattern` (between backticks)."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        (command,) = re.findall(r"`(python [^`]*" + pattern + r"[^`]*)`", f.read())
    return command


def _run(command: str, cwd: str, timeout: int = 600) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    assert argv[0] == "python"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    return proc


def _released_model(folder: str) -> None:
    """A random tiny Wav2Vec2ForPreTraining written as a transformers folder (no torch needed)."""
    import flax.linen as nn
    import jax

    from xlsr_jax.convert import hf_io, params_to_hf
    from xlsr_jax.models import Wav2Vec2ForPreTraining, get_preset

    config = get_preset("tiny")
    variables = Wav2Vec2ForPreTraining(config).init(jax.random.key(0), np.zeros((1, 16000), np.float32))
    hf_config, state = params_to_hf(config, "Wav2Vec2ForPreTraining", jax.device_get(nn.unbox(variables["params"])))
    hf_io.write_hf_folder(folder, hf_config, state, json_files={hf_io.PREPROCESSOR: hf_io.preprocessor_config()})


def _clips(cwd: str) -> None:
    from data_pipelines import load_audio

    sw = os.path.join(CORPUS, "sw", "clips")
    names = sorted(os.listdir(sw))
    with open(os.path.join(sw, names[0]), "rb") as src, open(os.path.join(cwd, "clip1.mp3"), "wb") as dst:
        dst.write(src.read())
    for name, source in (("clip2.wav", names[1]), ("clip.flac", names[2]), ("a.wav", names[3]), ("b.flac", names[4])):
        sf.write(os.path.join(cwd, name), load_audio(os.path.join(sw, source)), 16000)


@pytest.mark.slow  # trains twice and runs six commands
@pytest.mark.integration
def test_readme_finetuning_quickstart(tmp_path):
    cwd = str(tmp_path)
    for name in ("train.py", "configs"):
        os.symlink(os.path.join(REPO, name), os.path.join(cwd, name))
    _released_model(os.path.join(cwd, "path", "to", "wav2vec2-xls-r-300m"))
    _clips(cwd)
    commands = readme_block("**Fine-tune released weights on a low-resource language:**")

    def command(part: str) -> str:
        (found,) = [c for c in commands if part in c]
        return found

    hf_to_orbax, train = command(" hf-to-orbax "), command("python train.py ")
    transcribe, identify, to_hf = (
        command("xlsr_jax.transcribe "),
        command("xlsr_jax.identify "),
        command(" orbax-to-hf "),
    )
    assert len(commands) == 6 and command(" fairseq-to-orbax ")

    _run(hf_to_orbax, cwd)  # exactly as written
    assert os.path.isfile(os.path.join(cwd, "ckpt", "xls_r_300m", "model.json"))

    # Training: the README's command with the CPU-test substitutions of the module docstring.
    assert ",path=/data/cv," in train and train.endswith("--workdir runs/sw")
    tiny = train.replace("path=/data/cv", f"path={CORPUS}").replace(
        "init=ckpt/xls_r_300m", "init=ckpt/xls_r_300m,preset=tiny,steps=1,batch=4"
    )
    _run(tiny + " --config.eval.every_steps=0", cwd)
    lid = (
        "python train.py --config configs/finetune/demo_lid.py:steps=1,batch=4,init=ckpt/xls_r_300m --workdir runs/lid"
    )
    _run(lid + " --config.eval.every_steps=0", cwd)

    # Every command on the workdirs, exactly as written.
    out = _run(transcribe, cwd)
    lines = out.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["clip1.mp3", "clip2.wav"]
    assert "loaded step 1 (the newest) of runs/sw" in out.stderr

    out = _run(identify, cwd)
    (line,) = out.stdout.splitlines()
    assert line.startswith("clip.flac\t") and len(line.split("\t")) == 4  # three most probable languages
    assert "loaded step 1 (the newest) of runs/lid" in out.stderr

    out = _run(to_hf, cwd)
    for name in ("config.json", "model.safetensors", "vocab.json", "preprocessor_config.json"):
        assert os.path.isfile(os.path.join(cwd, "hf_out", name)), name
    assert "loaded step 1 (the newest) of runs/sw" in out.stderr

    extract = readme_line("xlsr_jax.extract")
    assert extract == "python -m xlsr_jax.extract --ckpt DIR --layer 12 --out feats.npz a.wav b.flac"
    _run(extract.replace("DIR", "runs/sw").replace("--layer 12", "--layer 2"), cwd)
    feats = np.load(os.path.join(cwd, "feats.npz"))
    assert list(feats["paths"]) == ["a.wav", "b.flac"] and feats["features_0"].shape[1] == 64


def _train_commands() -> list[str]:
    """Every `python train.py ...` command of the README's bash blocks (continuations joined)."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), re.S)
    lines = [line.split("  #")[0].strip() for b in blocks for line in re.sub(r"\\\n\s*", "", b).splitlines()]
    return [line for line in lines if line.startswith("python train.py ")]


@pytest.mark.parametrize("command", _train_commands())
def test_readme_training_commands_build_their_configs(command, monkeypatch):
    """Every README training command names a config that builds with its variant and whose
    overrides exist (what train.py's locked config checks before touching any data); the
    fine-tuning one also runs above, on a CPU-sized model."""
    import importlib.util

    monkeypatch.syspath_prepend(REPO)
    argv = shlex.split(command)
    path, _, arg = argv[argv.index("--config") + 1].partition(":")
    spec = importlib.util.spec_from_file_location("readme_config", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    assert "--workdir" in argv
    for flag in (a for a in argv if a.startswith("--config.")):
        *sections, field = flag.removeprefix("--config.").split("=", 1)[0].split(".")
        node = config
        for name in sections:
            node = node[name]
        assert field in node, flag
