"""Vocabularies laid out the way the hub has them (issue 18, part 3): a random-init tiny
transformers Wav2Vec2ForCTC with its processor, converted with `hf-to-orbax`, transcribes with
`xlsr_jax.transcribe` exactly as transformers' `Wav2Vec2Processor.batch_decode` does; an
unsupported layout fails at conversion in one line; `orbax-to-hf --lm` writes the
Wav2Vec2ProcessorWithLM files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import soundfile  # noqa: E402
import torch  # noqa: E402

from tests.convert_testlib import hf_config  # noqa: E402
from xlsr_jax import convert, lm  # noqa: E402
from xlsr_jax.convert import __main__ as convert_cli  # noqa: E402

CHARS = list("abcdefghij")
# name -> (vocab.json tokens in id order, tokenizer keyword arguments, extra head outputs)
LAYOUTS = {
    # fairseq / our trainer's order.
    "fairseq": (["<pad>", "<s>", "</s>", "<unk>", "|", *CHARS], {}, 0),
    # The XLS-R fine-tuning blog: characters first ("|" = 0), [UNK], [PAD] last; the tokenizer
    # appends <s> and </s> as added tokens and the head is sized len(tokenizer).
    "blog": (["|", *CHARS, "[UNK]", "[PAD]"], {"unk_token": "[UNK]", "pad_token": "[PAD]"}, 2),
    # The same with the head sized by vocab.json alone (added tokens never output).
    "blog_short_head": (["|", *CHARS, "[UNK]", "[PAD]"], {"unk_token": "[UNK]", "pad_token": "[PAD]"}, 0),
    # No word delimiter in the vocabulary at all (character scripts): the tokenizer adds "|"
    # after the vocabulary, the head never outputs it.
    "no_delimiter": (["<pad>", "<s>", "</s>", "<unk>", *CHARS], {}, 0),
    # Upper-case letters decoded in lower case, a space token instead of "|" as delimiter.
    "upper_space": (
        ["<pad>", "<unk>", " ", *[c.upper() for c in CHARS]],
        {"word_delimiter_token": " ", "do_lower_case": True, "bos_token": None, "eos_token": None},
        0,
    ),
}


def _hub_folder(path, layout: str, seed: int = 0) -> tuple[str, object]:
    tokens, settings, extra = LAYOUTS[layout]
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(tokens)}, f)
    tokenizer = transformers.Wav2Vec2CTCTokenizer(os.path.join(path, "vocab.json"), **settings)
    extractor = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True)
    processor = transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
    head = len(tokens) + extra
    assert head <= len(tokenizer)
    config = hf_config(
        "layer", True, vocab_size=head, pad_token_id=tokenizer.pad_token_id, initializer_range=0.5, layerdrop=0.0
    )
    torch.manual_seed(seed)
    model = transformers.Wav2Vec2ForCTC(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path, processor


def _clips(tmp_path, n=3):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        wave = rng.standard_normal(16000 + 800 * i).astype(np.float32) * 0.1
        paths.append(str(tmp_path / f"clip{i}.wav"))
        soundfile.write(paths[-1], wave, 16000, subtype="FLOAT")
    return paths


def _transformers_transcripts(folder, paths):
    processor = transformers.Wav2Vec2Processor.from_pretrained(folder)
    model = transformers.Wav2Vec2ForCTC.from_pretrained(folder).eval()
    out = []
    for path in paths:
        wave, rate = soundfile.read(path, dtype="float32")
        inputs = processor(wave, sampling_rate=rate, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
        out.append(processor.batch_decode(logits.argmax(-1).numpy())[0])
    return out


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_transcripts_equal_transformers_on_hub_layouts(tmp_path, layout):
    from xlsr_jax.transcribe import Transcriber

    folder, _ = _hub_folder(str(tmp_path / "hub"), layout)
    assert convert_cli.main(["hf-to-orbax", folder, str(tmp_path / "ours")]) == 0
    paths = _clips(tmp_path)
    expected = _transformers_transcripts(folder, paths)
    ours, errors = Transcriber(str(tmp_path / "ours"), batch_size=1)(paths)
    assert errors == [] and ours == expected
    # A random model's argmax spreads over the vocabulary: the layout is exercised.
    assert len(set("".join(expected))) > 4, expected
    # Back to transformers: the tokenizer files say what they said.
    convert.orbax_to_hf(str(tmp_path / "ours"), str(tmp_path / "back"))
    assert _transformers_transcripts(str(tmp_path / "back"), paths) == expected


def test_unsupported_layout_fails_at_conversion_in_one_line(tmp_path, capsys):
    folder, _ = _hub_folder(str(tmp_path / "hub"), "fairseq")
    capsys.readouterr()  # transformers' progress bars
    with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
        settings = json.load(f)
    settings["pad_token"] = "<blank>"  # a blank the vocabulary does not have
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(settings, f)
    assert convert_cli.main(["hf-to-orbax", folder, str(tmp_path / "ours")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "pad_token '<blank>'" in err
    # A per-language (MMS-style) nested vocabulary.
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({"eng": {"<pad>": 0}, "fra": {"<pad>": 0}}, f)
    assert convert_cli.main(["hf-to-orbax", folder, str(tmp_path / "ours2")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nested" in err


def test_orbax_to_hf_lm_writes_the_processor_with_lm_layout(tmp_path):
    folder, _ = _hub_folder(str(tmp_path / "hub"), "blog")
    convert.hf_to_orbax(folder, str(tmp_path / "ours"))
    arpa = str(tmp_path / "lm.arpa")
    lm.write_arpa(["abc def", "ghi abc"], arpa)
    out = str(tmp_path / "with_lm")
    args = ["orbax-to-hf", str(tmp_path / "ours"), out, "--lm", arpa, "--alpha", "0.7", "--beta", "1.5"]
    assert convert_cli.main(args) == 0
    with open(os.path.join(out, "alphabet.json"), encoding="utf-8") as f:
        alphabet = json.load(f)
    # Id order, the pad ([PAD], id 12) as the one blank, "|" as a space, [UNK] as pyctcdecode's sign.
    assert alphabet == {"labels": [" ", *CHARS, "\u2047", "", "<s>", "</s>"], "is_bpe": False}
    with open(os.path.join(out, "language_model", "attrs.json"), encoding="utf-8") as f:
        assert json.load(f) == {"alpha": 0.7, "beta": 1.5, "unk_score_offset": -10.0, "score_boundary": True}
    with open(os.path.join(out, "language_model", "unigrams.txt"), encoding="utf-8") as f:
        assert f.read().split() == ["abc", "def", "ghi"]
    assert os.path.isfile(os.path.join(out, "language_model", "lm.arpa"))
    try:
        import pyctcdecode  # noqa: F401
    except ImportError:
        return  # pyctcdecode is not in any extra (see xlsr_jax.lm); the files are checked above
    loaded = transformers.Wav2Vec2ProcessorWithLM.from_pretrained(out)
    assert list(loaded.decoder._alphabet.labels) == alphabet["labels"]


def test_hub_ids_download_through_huggingface_hub(tmp_path, monkeypatch, capsys):
    """`hf-to-orbax facebook/... DIR` fetches with huggingface_hub (mocked: no network in tests)."""
    import huggingface_hub

    folder, _ = _hub_folder(str(tmp_path / "snapshot"), "blog")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return folder

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    out = str(tmp_path / "ours")
    assert convert_cli.main(["hf-to-orbax", "facebook/wav2vec2-tiny-test", out, "--revision", "v1"]) == 0
    assert calls == [("facebook/wav2vec2-tiny-test", {"revision": "v1", "allow_patterns": ["*.json", "*.safetensors"]})]
    from xlsr_jax import pretrained

    assert pretrained.load_pretrained(out).vocab["[PAD]"] == len(CHARS) + 2  # "|", the letters, [UNK], [PAD]
    # A local folder is used as is, without the hub.
    calls.clear()
    assert convert_cli.main(["hf-to-orbax", folder, str(tmp_path / "ours2")]) == 0 and calls == []

    # Offline with nothing cached: one line naming the id and the reason.
    def offline(repo_id, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("Cannot find the requested files in the disk cache\nmore")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    capsys.readouterr()
    assert convert_cli.main(["hf-to-orbax", "facebook/wav2vec2-xls-r-300m", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: facebook/wav2vec2-xls-r-300m: not a local folder")
    assert "LocalEntryNotFoundError" in err and "HF_HUB_OFFLINE" in err
