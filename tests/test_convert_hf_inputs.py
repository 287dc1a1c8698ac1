"""`hf-to-orbax` on folders as users have them: audio settings stored where transformers 5 keeps
them, and malformed inputs (config.json, weight files) answered in one line naming file and field."""

from __future__ import annotations

import json
import logging
import os

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

import data_pipelines
from tests.convert_testlib import hf_config, max_abs_diff
from xlsr_jax import pretrained, transcribe
from xlsr_jax.convert import hf_io, hf_to_orbax
from xlsr_jax.convert.__main__ import main as cli

torch = pytest.importorskip("torch", reason="the reference models come from transformers: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="the reference is transformers' own save_pretrained output")


VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5, "b": 6, "c": 7, "d": 8, "e": 9}


def _ctc_folder(folder, *, processor: bool = True, seed: int = 0, **extractor):
    """A transformers CTC folder: model.save_pretrained, then (optionally) the processor's files,
    as transformers 5 writes them (processor_config.json only, no preprocessor_config.json)."""
    torch.manual_seed(seed)
    model = transformers.Wav2Vec2ForCTC(hf_config("layer", True)).eval()
    model.save_pretrained(folder)
    if processor:
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(VOCAB, f)
        tokenizer = transformers.Wav2Vec2CTCTokenizer(os.path.join(folder, "vocab.json"))
        fe = transformers.Wav2Vec2FeatureExtractor(**extractor)
        transformers.Wav2Vec2Processor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(folder)
    return model


def test_transformers5_processor_config_settings_are_used(tmp_path):
    """An 8 kHz telephone-band model without normalisation keeps both settings, and our input
    equals transformers' processor output for the same file."""
    hf = _ctc_folder(tmp_path / "hf", sampling_rate=8000, do_normalize=False)
    assert not (tmp_path / "hf" / hf_io.PREPROCESSOR).exists()  # transformers 5's layout
    loaded = pretrained.load_pretrained(hf_to_orbax(tmp_path / "hf", tmp_path / "ours"))
    assert loaded.audio == {"sampling_rate": 8000, "do_normalize": False}

    # The same 16 kHz file through both: transformers resamples by hand then runs its processor.
    rng = np.random.default_rng(0)
    wave16 = (0.3 * np.sin(np.arange(6400) / 7.0) + 0.05 * rng.standard_normal(6400)).astype(np.float32)
    sf.write(tmp_path / "clip.wav", wave16, 16000, subtype="FLOAT")
    processor = transformers.Wav2Vec2Processor.from_pretrained(tmp_path / "hf")
    assert processor.feature_extractor.sampling_rate == 8000 and processor.feature_extractor.do_normalize is False
    wave8 = data_pipelines.load_audio(str(tmp_path / "clip.wav"), target_sr=8000)
    ref_inputs = processor(wave8, sampling_rate=8000, return_tensors="pt").input_values
    (ours,), errors = transcribe.load_inputs([str(tmp_path / "clip.wav")], loaded.audio)
    assert errors == [] and ours.shape == (3200,)
    np.testing.assert_allclose(ours, ref_inputs[0].numpy(), atol=1e-6)
    with torch.no_grad():
        ref = hf(ref_inputs).logits
    logits, _ = loaded.model().apply({"params": loaded.params}, jnp.asarray(ours)[None], None, deterministic=True)
    assert max_abs_diff(logits, ref) < 1e-4
    # What the old silent defaults (16 kHz, normalised) would have fed the model instead.
    (wrong,), _ = transcribe.load_inputs([str(tmp_path / "clip.wav")], {"sampling_rate": 16000, "do_normalize": True})
    assert wrong.shape != ours.shape


def test_settings_follow_transformers_priority_and_defaults(tmp_path, caplog):
    folder = tmp_path / "hf"
    _ctc_folder(folder, sampling_rate=8000, do_normalize=False)
    # A stale legacy file that disagrees: transformers reads processor_config.json first.
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    with caplog.at_level(logging.WARNING):
        got = hf_io.read_audio_settings(folder, needed=True)
    fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder)
    assert (
        got
        == {"sampling_rate": fe.sampling_rate, "do_normalize": fe.do_normalize}
        == {
            "sampling_rate": 8000,
            "do_normalize": False,
        }
    )
    assert "disagree on sampling_rate, do_normalize" in caplog.text
    # A section without do_normalize: transformers' Wav2Vec2FeatureExtractor default (True), logged.
    proc = json.loads((folder / hf_io.PROCESSOR).read_text())
    del proc["feature_extractor"]["do_normalize"]
    (folder / hf_io.PROCESSOR).write_text(json.dumps(proc))
    os.remove(folder / hf_io.PREPROCESSOR)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=hf_io.log.name):
        got = hf_io.read_audio_settings(folder, needed=True)
    assert got["do_normalize"] is transformers.Wav2Vec2FeatureExtractor.from_pretrained(folder).do_normalize is True
    assert "has no do_normalize: assuming transformers' default True" in caplog.text
    # Legacy layout (preprocessor_config.json only) still works.
    os.remove(folder / hf_io.PROCESSOR)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=22050, do_normalize=False).save_pretrained(folder)
    assert hf_io.read_audio_settings(folder, needed=True) == {"sampling_rate": 22050, "do_normalize": False}


def test_a_ctc_folder_without_settings_is_refused_unless_stated(tmp_path, capsys, caplog):
    _ctc_folder(tmp_path / "hf", processor=False)
    capsys.readouterr()  # transformers' own progress output
    assert cli(["hf-to-orbax", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--sampling_rate" in err and "--do_normalize" in err
    assert not (tmp_path / "ours").exists()
    args = ["hf-to-orbax", str(tmp_path / "hf"), str(tmp_path / "ours"), "--sampling_rate", "8000"]
    assert cli([*args, "--do_normalize", "false"]) == 0
    assert pretrained.load_pretrained(tmp_path / "ours").audio == {"sampling_rate": 8000, "do_normalize": False}
    # A pretrained (headless) model is fine-tuned by the 16 kHz pipeline: the assumption is logged.
    torch.manual_seed(1)
    transformers.Wav2Vec2ForPreTraining(hf_config("group", False)).save_pretrained(tmp_path / "pre")
    with caplog.at_level(logging.WARNING):
        loaded = pretrained.load_pretrained(hf_to_orbax(tmp_path / "pre", tmp_path / "pre_ours"))
    assert loaded.audio == {"sampling_rate": 16000, "do_normalize": False}
    assert "no sampling_rate stated" in caplog.text and "no do_normalize stated" in caplog.text


@pytest.mark.parametrize(
    "section,field",
    [
        ({"sampling_rate": "16k"}, "sampling_rate"),
        ({"sampling_rate": 0}, "sampling_rate"),
        ({"do_normalize": "yes"}, "do_normalize"),
        ({"feature_size": 80}, "feature_size"),
        ("not a dict", "feature-extractor settings"),
    ],
)
def test_invalid_audio_settings_are_one_line(section, field, tmp_path, capsys):
    _ctc_folder(tmp_path / "hf")
    proc = json.loads((tmp_path / "hf" / hf_io.PROCESSOR).read_text())
    proc["feature_extractor"] = {**proc["feature_extractor"], **section} if isinstance(section, dict) else section
    (tmp_path / "hf" / hf_io.PROCESSOR).write_text(json.dumps(proc))
    capsys.readouterr()
    assert cli(["hf-to-orbax", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and hf_io.PROCESSOR in err and field in err
