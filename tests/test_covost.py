"""CoVoST-2 source, the demo corpus's translations and the mBART-50-layout target tokenizer."""

from __future__ import annotations

import os

import numpy as np
import pytest

from data_pipelines import covost, sources
from data_pipelines import translation as tr
from data_pipelines.demo_sentences import SENTENCES, TRANSLATIONS_EN

spm = pytest.importorskip("sentencepiece", reason="needs the translation extra: pip install -e '.[translation]'")

DEMO = os.path.join(os.path.dirname(__file__), os.pardir, "data_pipelines", "demo_corpus")


def test_every_demo_sentence_has_one_english_translation():
    assert TRANSLATIONS_EN.keys() == SENTENCES.keys()
    for locale, sentences in SENTENCES.items():
        assert len(TRANSLATIONS_EN[locale]) == len(sentences), locale
        assert all(t.strip() and t[-1] in ".?!" for t in TRANSLATIONS_EN[locale]), locale


def test_demo_corpus_as_covost(tmp_path):
    written = covost.write_demo_covost(DEMO, str(tmp_path))
    assert os.path.basename(written[0]).startswith("covost_v2.") and len(written) == 3 * len(SENTENCES)
    src = sources.make_source({"type": "covost", "path": str(tmp_path), "clips": DEMO, "pairs": ["es_en"]}, "train")
    assert set(src.languages) == {"es"} and set(src.target_languages) == {"en"}
    table = dict(zip(SENTENCES["es"], TRANSLATIONS_EN["es"]))
    assert all(table[s] == t for s, t in zip(src.source_texts, src.transcripts))
    assert (src.num_samples > 0).all() and src.load(0).ndim == 1
    every = covost.covost_source({"type": "covost", "path": str(tmp_path), "clips": DEMO}, "test")
    assert set(every.languages) == set(SENTENCES)


def test_bad_covost_input_is_named_or_counted(tmp_path, caplog):
    covost.write_demo_covost(DEMO, str(tmp_path))
    tsv = tmp_path / "covost_v2.sw_en.dev.tsv"
    lines = tsv.read_text(encoding="utf-8").splitlines()
    first = lines[1].split("\t")
    first[2] = ""  # no translation: skipped and counted
    tsv.write_text("\n".join([lines[0], "\t".join(first)] + lines[2:]) + "\n", encoding="utf-8")
    src = covost.covost_source({"path": str(tmp_path), "clips": DEMO, "pairs": ["sw_en"]}, "dev")
    assert len(src) == len(lines) - 2 and "1 of" in caplog.text
    with pytest.raises(FileNotFoundError, match="covost_v2.xx_en.dev.tsv"):
        covost.covost_source({"path": str(tmp_path), "clips": DEMO, "pairs": ["xx_en"]}, "dev")
    (tmp_path / "covost_v2.tr_en.dev.tsv").write_text("path\tsentence\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"covost_v2.tr_en.dev.tsv: missing column\(s\) \['translation'\]"):
        covost.covost_source({"path": str(tmp_path), "clips": DEMO, "pairs": ["tr_en"]}, "dev")


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    sentences = [t for ts in TRANSLATIONS_EN.values() for t in ts]
    model = tr.train_sentencepiece(sentences, vocab_size=120)
    path = tmp_path_factory.mktemp("spm") / "sentencepiece.bpe.model"
    path.write_bytes(model)
    return str(path)


def test_target_tokenizer_layout_truncation_and_round_trip(spm_model):
    tok = tr.TargetTokenizer(spm_model)
    assert tok.vocab_size == 120 + 1 + len(tr.MBART50_LANGUAGE_CODES) + 1  # as mBART-50's 250054
    ids = tok.encode("The dog runs in the park.", "en")
    assert ids[0] == tok.language_id("en_XX") == 120 + 1 + 3 and ids[-1] == tr.EOS
    assert all(tr.UNK <= i < 121 for i in ids[1:-1])
    assert tok.decode(ids) == "The dog runs in the park."
    long = tok.encode("The dog runs in the park. " * 10, "en", max_length=8)
    assert len(long) == 8 and long[-1] == tr.EOS and tok.truncated == 1
    labels = tr.pad_targets([ids, long], 20)
    assert labels.shape == (2, 20) and (labels[0, len(ids) :] == tr.PAD).all()
    with pytest.raises(ValueError, match="'xx'"):
        tok.language_id("xx")


def test_target_ids_match_transformers_mbart50_tokenizer(spm_model):
    transformers = pytest.importorskip("transformers", reason="needs transformers (the torch extra)")
    folder = os.path.dirname(spm_model)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        f.write('{"tokenizer_class": "MBart50Tokenizer", "src_lang": "es_XX", "tgt_lang": "en_XX"}')
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    assert len(hf) == tr.TargetTokenizer(spm_model).vocab_size
    tok = tr.TargetTokenizer(spm_model)
    for text in ("The dog runs in the park.", "Where is the station?", "Zebras quack loudly!"):
        expected = hf(text_target=text)["input_ids"]
        assert tok.encode(text, "en") == expected, text
        assert tok.decode(expected) == hf.decode(expected, skip_special_tokens=True)
    assert np.all([tok.language_id(c) == hf.convert_tokens_to_ids(c) for c in tr.MBART50_LANGUAGE_CODES])
