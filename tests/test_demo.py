"""`make demo`'s translate stage (experiments/demo.py), run alone on a tiny budget.

The stage is run through the script's own `main` with `--stages translate` (as a user re-running
one stage would), from random initialisation (no sibling finetune_ctc/pretrain directories) and
a few updates: BLEU/chrF must be computed before and after training, and the
translations of the test clips printed. Whether the demo's BLEU rises is a training-budget
question measured by the full stage (numbers in configs/finetune/demo_st.py), not here.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # trains and decodes a tiny model (~30-60 s)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _demo_module():
    spec = importlib.util.spec_from_file_location("xlsr_demo", os.path.join(REPO, "experiments", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_translate_stage_scores_before_and_after_and_prints_translations(tmp_path, capsys):
    demo = _demo_module()
    workdir = tmp_path / "demo"
    demo.main(["--workdir", str(workdir), "--stages", "translate", "--translate_arg", "steps=4,batch=4,langs=es"])
    out = capsys.readouterr().out  # the trainer's console metrics, then the stage's JSON summary
    printed = json.loads(out[out.index('{\n  "translate"') :])
    summary = printed["translate"]
    assert summary == json.loads((workdir / "summary.json").read_text())["translate"]
    assert summary["steps"] == 4 and summary["init"] == "random"
    # Before training on the training clips; after it on them and on the unseen dev sentences.
    for when, splits in (("bleu_chrf_before", {"train"}), ("bleu_chrf_after", {"train", "dev"})):
        assert set(summary[when]) == splits, when
        for split, scores in summary[when].items():
            assert set(scores) == {"bleu", "chrf"}, (when, split)
            assert all(0.0 <= v <= 100.0 for v in scores.values()), (when, split, scores)
    # One test clip per source language, translated (possibly empty after 4 updates), no errors.
    assert [t["file"] for t in summary["translations"]] == [
        t["file"] for t in summary["translations"] if t["file"].startswith("data_pipelines/demo_corpus/es/clips/")
    ]
    assert len(summary["translations"]) == 1 and isinstance(summary["translations"][0]["translation"], str)
    assert summary["errors"] == []
    assert (workdir / "translate" / "checkpoints").is_dir()
