"""CoVoST-2 source, the demo corpus's translations and the mBART-50-layout target tokenizer."""

from __future__ import annotations

import os

import numpy as np
import pytest

from data_pipelines import covost, sources
from data_pipelines import translation as tr
from data_pipelines.config import DEMO_CORPUS_DIR
from data_pipelines.demo_sentences import SENTENCES, TRANSLATIONS_EN

spm = pytest.importorskip("sentencepiece", reason="needs the translation extra: pip install -e '.[translation]'")

DEMO = DEMO_CORPUS_DIR


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


def test_st_input_pipeline_on_the_demo_corpus(tmp_path, spm_model):
    import data_pipelines

    covost.write_demo_covost(DEMO, str(tmp_path))
    cfg = data_pipelines.default_config()
    cfg.sources = [{"type": "covost", "path": str(tmp_path), "clips": DEMO, "pairs": ["es_en", "ru_en"]}]
    cfg.batch_size, cfg.num_buckets, cfg.min_sample_size, cfg.max_sample_size = 4, 1, 8000, 160000
    cfg.target.tokenizer, cfg.target.max_length = spm_model, 9
    tok = tr.TargetTokenizer(spm_model)
    pipe = data_pipelines.build_input(cfg, "dev", "st")
    try:
        batches = list(pipe)
    finally:
        pipe.close()
    labels = np.concatenate([b["labels"] for b in batches])
    padding = np.concatenate([b["label_padding"] for b in batches])
    valid = np.concatenate([b["valid"] for b in batches])
    assert labels.shape[1] == 9 and valid.sum() == 20  # 5 sentences x 2 voices x 2 languages
    assert (labels[valid, 0] == tok.language_id("en")).all()
    lengths = (~padding).sum(1)
    rows = np.flatnonzero(valid)
    assert all(labels[r, lengths[r] - 1] == tr.EOS and (labels[r, lengths[r] :] == tr.PAD).all() for r in rows)
    # Targets longer than 9 tokens are cut (</s> kept) and counted, not dropped.
    full = [len(tok.encode(t, "en")) for t in TRANSLATIONS_EN["es"][30:35] + TRANSLATIONS_EN["ru"][30:35]]
    assert pipe.stats["counts"].get("target_truncated", 0) == 2 * sum(n > 9 for n in full) > 0
    texts = {tok.decode(labels[r]) for r in rows if lengths[r] < 9}
    assert texts <= set(TRANSLATIONS_EN["es"][30:35] + TRANSLATIONS_EN["ru"][30:35])


def test_st_pipeline_without_tokenizer_names_the_field():
    import data_pipelines

    cfg = data_pipelines.default_config()
    with pytest.raises(ValueError, match="data.target.tokenizer"):
        data_pipelines.build_input(cfg, "dev", "st")


def test_shipped_demo_translation_files_are_current(tmp_path):
    """data_pipelines/demo_corpus/covost/ is what write_demo_translation_files writes today."""
    import shutil

    shutil.copytree(DEMO, tmp_path / "corpus", ignore=shutil.ignore_patterns("covost", "*.mp3"))
    for locale in SENTENCES:  # the clips are not needed to write the tsvs
        (tmp_path / "corpus" / locale / "clips").mkdir(exist_ok=True)
    written = covost.write_demo_translation_files(str(tmp_path / "corpus"))
    for path in written:
        shipped = os.path.join(DEMO, covost.DEMO_SUBDIR, os.path.basename(path))
        if path.endswith(".tsv"):
            with open(path, encoding="utf-8") as a, open(shipped, encoding="utf-8") as b:
                assert a.read() == b.read(), path
    fresh, ship = (
        tr.TargetTokenizer(written[-1]),
        tr.TargetTokenizer(os.path.join(DEMO, "covost", covost.DEMO_TOKENIZER)),
    )
    every = [t for ts in TRANSLATIONS_EN.values() for t in ts]
    assert [fresh.encode(t, "en") for t in every] == [ship.encode(t, "en") for t in every]
    assert all(tr.UNK not in ship.encode(t, "en") for t in every)
