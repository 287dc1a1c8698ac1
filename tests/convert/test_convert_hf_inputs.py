"""`hf-to-orbax` on folders as users have them: audio settings stored where transformers 5 keeps
them, and malformed inputs (config.json, weight files) answered in one line naming file and field."""

from __future__ import annotations

import json
import logging
import os
import time

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
    wave8 = data_pipelines.load_audio(str(tmp_path / "clip.wav"), sampling_rate=8000)
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


# ---- malformed inputs: one line naming the file and the field (issue 19, part 4) ----------------


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A valid transformers Wav2Vec2Model folder (config.json + model.safetensors)."""
    folder = tmp_path_factory.mktemp("valid") / "hf"
    torch.manual_seed(2)
    transformers.Wav2Vec2Model(hf_config("layer", True)).save_pretrained(folder)
    return folder


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    start = time.monotonic()
    assert cli(argv) == 1
    assert time.monotonic() - start < 60  # no unbounded work before the answer
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


def _edit_config(folder, edit):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    path.write_text(edit(config) if callable(edit) else edit)


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda c: json.dumps([c]), "JSON object"),  # a list
        (lambda c: json.dumps({**c, "hidden_size": "64"}), "hidden_size must be an integer"),
        (lambda c: json.dumps({**c, "num_hidden_layers": 2.5}), "num_hidden_layers must be an integer"),
        (lambda c: json.dumps({**c, "num_hidden_layers": 10_000_000}), "num_hidden_layers must be in [1, 1024]"),
        (lambda c: json.dumps({**c, "num_hidden_layers": 3}), "(num_hidden_layers) but the weights hold 2"),
        (lambda c: json.dumps({**c, "conv_dim": [16, 24]}), "conv_dim, conv_stride and conv_kernel"),
        (lambda c: json.dumps({**c, "conv_kernel": [10, -3, 3]}), "conv_kernel must be a list"),
        (lambda c: json.dumps({**c, "layerdrop": 1.5}), "layerdrop must be a probability"),
        (lambda c: json.dumps({**c, "do_stable_layer_norm": "true"}), "do_stable_layer_norm must be true or false"),
        (lambda c: json.dumps({**c, "hidden_size": 30}), "divisible by num_attention_heads"),
        (lambda c: json.dumps({**c, "architectures": "Wav2Vec2ForCTC"}), "architectures must be a list"),
        (lambda c: json.dumps({**c, "architectures": ["BertModel"]}), "unsupported architecture 'BertModel'"),
        (lambda c: json.dumps({**c, "id2label": ["a", "b"]}), "id2label must be an object"),
        (lambda c: json.dumps({**c, "feat_extract_norm": "batch"}), "feat_extract_norm must be one of"),
        (lambda c: json.dumps({**c, "xlsr_jax": {"attention_impl": "flash"}}), "attention_impl must be one of"),
        (lambda c: json.dumps({**c, "xlsr_jax": {"dtype": "int8"}}), "unsupported dtype 'int8'"),
        (lambda c: "{" + json.dumps(c)[1:-1], "not valid JSON"),  # truncated
        (lambda c: "", "not valid JSON (Expecting value: line 1 column 1"),  # empty
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_malformed_config_json_is_one_line_naming_file_and_field(edit, field, model_folder, tmp_path, capsys):
    folder = _copy(model_folder, tmp_path / "hf")
    _edit_config(folder, edit)
    err = _one_line_error(capsys, ["hf-to-orbax", str(folder), str(tmp_path / "out")])
    assert str(folder) in err and field in err
    assert not (tmp_path / "out").exists()


def _hostile_safetensors(kind: str, path) -> None:
    import struct

    data = (path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    if kind == "garbage":
        path.write_bytes(b"this is not a safetensors file" * 10)
    elif kind == "huge_header_length":  # claims an 8 EB header
        path.write_bytes(struct.pack("<Q", 2**63) + data[8:])
    elif kind == "header_not_json":
        path.write_bytes(struct.pack("<Q", 16) + b"{not json at all" + data[8 + n :])
    elif kind == "offsets_past_end":  # one tensor declares bytes beyond the file
        key = next(k for k in header if k != "__metadata__")
        begin, end = header[key]["data_offsets"]
        header[key]["data_offsets"] = [begin, end + 10**9]
        blob = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + n :])
    elif kind == "shape_vs_bytes":  # a shape whose size disagrees with its byte range
        key = next(k for k in header if k != "__metadata__")
        header[key]["shape"] = [10**6, 10**6]
        blob = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + n :])
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "kind", ["garbage", "huge_header_length", "header_not_json", "offsets_past_end", "shape_vs_bytes", "truncated"]
)
def test_hostile_safetensors_is_one_line_naming_the_file(kind, model_folder, tmp_path, capsys):
    folder = _copy(model_folder, tmp_path / "hf")
    _hostile_safetensors(kind, folder / "model.safetensors")
    err = _one_line_error(capsys, ["hf-to-orbax", str(folder), str(tmp_path / "out")])
    assert str(folder / "model.safetensors") in err and "not a valid safetensors file" in err


@pytest.mark.parametrize(
    "index,field",
    [
        ({"weight_map": {"a": "../../outside.safetensors"}}, "is not a .safetensors file name in the folder"),
        ({"weight_map": []}, "weight_map must be a non-empty object"),
        ({"metadata": {}}, "weight_map must be a non-empty object"),
        ({"weight_map": {"a": "missing.safetensors"}}, "listed in the weight index but missing"),
    ],
)
def test_malformed_shard_index_is_one_line(index, field, model_folder, tmp_path, capsys):
    folder = _copy(model_folder, tmp_path / "hf")
    os.remove(folder / "model.safetensors")
    (folder / hf_io.SAFETENSORS_INDEX).write_text(json.dumps(index))
    err = _one_line_error(capsys, ["hf-to-orbax", str(folder), str(tmp_path / "out")])
    assert str(folder) in err and field in err


@pytest.mark.parametrize("kind", ["empty", "garbage", "truncated"])
def test_damaged_pytorch_bin_is_one_line_naming_the_file(kind, model_folder, tmp_path, capsys):
    folder = _copy(model_folder, tmp_path / "hf")
    os.remove(folder / "model.safetensors")
    model = transformers.Wav2Vec2Model.from_pretrained(model_folder)
    torch.save(model.state_dict(), folder / hf_io.TORCH_BIN)
    data = (folder / hf_io.TORCH_BIN).read_bytes()
    new = {"empty": b"", "garbage": b"garbage" * 100, "truncated": data[: len(data) // 2]}[kind]
    (folder / hf_io.TORCH_BIN).write_bytes(new)
    err = _one_line_error(capsys, ["hf-to-orbax", str(folder), str(tmp_path / "out")])
    assert str(folder / hf_io.TORCH_BIN) in err


@pytest.mark.parametrize(
    "name,content,field",
    [
        ("vocab.json", "{not json", "not valid JSON"),
        ("vocab.json", "[1, 2]", "expected a JSON object"),
        ("tokenizer_config.json", "{", "not valid JSON"),
    ],
)
def test_malformed_tokenizer_files_are_one_line_naming_the_file(name, content, field, tmp_path, capsys):
    _ctc_folder(tmp_path / "hf")
    (tmp_path / "hf" / name).write_text(content)
    err = _one_line_error(capsys, ["hf-to-orbax", str(tmp_path / "hf"), str(tmp_path / "out")])
    assert str(tmp_path / "hf" / name) in err and field in err
