"""End-to-end fine-tuning on the shipped corpus through the trainer: CTC lowers CER on held-out
test utterances, language ID beats chance, and freezing is bit-exact in a real run.

The slowest tests of this package (a few hundred tiny-model updates each, one length bucket so
one compilation per program). One CTC run and one LID run are shared by the tests here and by
tests/test_transcribe.py (module fixtures in tests/finetune_testlib.py).
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from tests.finetune_testlib import ctc_run, lid_run  # noqa: F401 - pytest fixtures

pytestmark = pytest.mark.slow  # hundreds of fine-tuning updates


def _flat(tree, prefix=()):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, (*prefix, k)))
        return out
    return {"/".join(prefix): np.asarray(tree)}


def test_ctc_finetuning_lowers_cer_on_held_out_utterances(ctc_run):  # noqa: F811
    before, after = ctc_run["cer_before"], ctc_run["cer_after"]
    print("CER before/after:", before, after)
    # Measured: 2.43 (a random head inserts characters everywhere) -> 0.79 after 300 updates.
    assert after["all"] < 0.5 * before["all"], (before, after)
    assert after["all"] < 0.9, after  # right characters come out, not just fewer insertions
    # The trainer's eval wrote WER/CER per language to TensorBoard's metrics and a JSON report.
    assert os.path.exists(os.path.join(ctc_run["workdir"], "eval", f"ctc_{ctc_run['steps']}.json"))
    metrics = ctc_run["metrics"][ctc_run["steps"]]
    for lang in ctc_run["languages"]:
        assert f"eval/cer/{lang}" in metrics and f"eval/wer/{lang}" in metrics


def test_freezing_really_freezes_in_a_real_run(ctc_run):  # noqa: F811
    pretrained = _flat(ctc_run["pretrained"]["wav2vec2"])
    at_thaw = _flat(ctc_run["params_at"][ctc_run["freeze"]]["wav2vec2"])
    final = _flat(ctc_run["params_at"][ctc_run["steps"]]["wav2vec2"])
    for name, value in pretrained.items():
        np.testing.assert_array_equal(at_thaw[name], value, err_msg=f"{name} moved while frozen")
        if name.startswith("feature_extractor/"):
            np.testing.assert_array_equal(final[name], value, err_msg=f"{name} moved (feature encoder is frozen)")
    moved = [
        n for n in pretrained if not n.startswith("feature_extractor/") and not np.array_equal(final[n], pretrained[n])
    ]
    assert len(moved) > 0.9 * sum(not n.startswith("feature_extractor/") for n in pretrained)
    head_start = _flat(ctc_run["fresh_head"])
    head_thaw = _flat(ctc_run["params_at"][ctc_run["freeze"]]["lm_head"])
    assert any(not np.array_equal(head_start[n], head_thaw[n]) for n in head_start)  # the head trains meanwhile


def test_language_id_beats_chance(lid_run):  # noqa: F811
    report = lid_run["report"]
    print("LID accuracy", report["accuracy"], "chance", report["chance"], report["per_language"])
    # 10 test clips per language: under chance (1/3), P(accuracy >= 0.55) is below 0.5%.
    # Measured with this recipe: 0.73 on dev after 150 updates (0.33 = chance).
    assert report["accuracy"] >= 0.55 and report["utterances"] == 10 * len(lid_run["languages"])
    assert lid_run["metrics"][lid_run["steps"]]["eval/accuracy"] >= 0.5  # the trainer's dev evaluation


def test_trained_params_are_finite(ctc_run, lid_run):  # noqa: F811
    for run in (ctc_run, lid_run):
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(run["final_params"]))
