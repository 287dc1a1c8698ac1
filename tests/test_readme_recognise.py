"""Every command of the README's "Recognise speech" section, run in the exact form it is shown
(in a directory laid out as the section assumes: the shared CTC run as runs/es, a demo clip as
clip.mp3, a joined minute as long.wav), with the outputs it shows."""

from __future__ import annotations

import os
import shlex

import pytest

from tests.finetune_testlib import ctc_run  # noqa: F401 - pytest fixture
from tests.test_recognise import _cli, _clips, joined_recording
from tests.trainer_testlib import REPO


def readme_commands(title: str = "## Recognise speech") -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of the section's bash blocks, in order."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split(title, 1)[1].split("\n## ", 1)[0]
    commands: list[tuple[str, list[str]]] = []
    for block in section.split("```bash\n")[1:]:
        for line in block.split("```", 1)[0].splitlines():
            if line.startswith("# "):
                commands[-1][1].append(line[2:])
            elif line.strip():
                commands.append((line, []))
    return commands


def _check_output(command: str, stdout: str, expected: list[str]) -> None:
    lines = stdout.splitlines()
    for want in expected:
        if want == "...":
            continue
        if "..." in want:  # a long line shown up to its first values
            prefix = want.split("...")[0].rstrip(", ")
            assert any(line.startswith(prefix) for line in lines), (command, want, lines)
        else:
            assert want in lines, (command, want, lines)


@pytest.mark.slow  # the shared fine-tuning run of finetune_testlib
@pytest.mark.integration
def test_readme_recognise_speech_commands(ctc_run, tmp_path, monkeypatch):  # noqa: F811
    pytest.importorskip("transformers")
    from tests.test_vocab_layouts import _hub_folder
    from xlsr_jax import convert
    from xlsr_jax.convert import __main__ as convert_cli

    os.makedirs(tmp_path / "runs" / "es")
    os.symlink(ctc_run["checkpoints"], tmp_path / "runs" / "es" / "checkpoints")
    clip, sentence = _clips("train")[2]
    assert sentence == "Mi madre cocina arroz con pollo."
    os.symlink(clip, tmp_path / "clip.mp3")
    joined_recording(str(tmp_path / "long.wav"), _clips("train")[:10], min_seconds=60.0)
    (tmp_path / "list.tsv").write_text(f"clip.mp3\t{sentence}\n")
    hub = _hub_folder(str(tmp_path / "hub_snapshot"), "blog")[0]
    convert.hf_to_orbax(hub, str(tmp_path / "ckpt" / "ctc"))
    monkeypatch.chdir(tmp_path)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: hub)

    commands = readme_commands()
    assert len(commands) >= 10
    for command, expected in commands:
        argv = shlex.split(command)
        assert argv[:2] == ["python", "-m"], command
        if argv[2] == "xlsr_jax.convert":  # in this process: the hub download is mocked
            assert convert_cli.main(argv[3:]) == 0, command
            continue
        proc = _cli(argv[2], *argv[3:], cwd=str(tmp_path))
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
        _check_output(command, proc.stdout, expected)
    assert os.path.isfile("out.ctm") and os.path.isfile("runs/es/eval_test/utterances.jsonl")
    assert os.path.isfile("hf_out/alphabet.json") and os.path.isfile("ckpt/xls_r_300m/model.json")
