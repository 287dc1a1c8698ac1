"""Transcript normalisation per language and the CTC vocabulary."""

import json

import numpy as np
import pytest

from data_pipelines import text
from data_pipelines.demo_sentences import SENTENCES


@pytest.mark.parametrize(
    "raw,lang,expected",
    [
        (
            "İstanbul'da IŞIK yanıyor.",
            "tr",
            "istanbul'da ışık yanıyor",
        ),  # Turkic dotted/dotless I
        ("¿Dónde está la estación?", "es", "dónde está la estación"),
        ("火车站在哪里？", "zh-CN", "火车站在哪里"),  # no word spaces
        ("स्टेशन कहाँ है?", "hi", "स्टेशन कहाँ है"),  # combining vowel signs kept, danda-free
        ("Жакшы жатыңыз,   эртең!", "ky", "жакшы жатыңыз эртең"),
        ("ＡＢＣ  test", "en", "abc test"),  # NFKC folds full-width Latin
    ],
)
def test_normalize_text(raw, lang, expected):
    assert text.normalize_text(raw, lang) == expected


@pytest.mark.parametrize("apostrophe", list(text.APOSTROPHE_LOOKALIKES))
def test_apostrophe_lookalikes_fold_to_the_apostrophe(apostrophe):
    # `It’s` was two words ("it s") while `It's` stayed one.
    assert (
        text.normalize_text(f"It{apostrophe}s {apostrophe}TIL", "en")
        == "it's 'til"
        == text.normalize_text("It's 'TIL", "en")
    )
    assert text.normalize_text(f"l{apostrophe}homme", "fr") == "l'homme"
    assert text.normalize_text(f"м{apostrophe}ясо", "uk") == "м'ясо"
    # Where the ʻokina is a letter, the look-alikes (ASCII ' too) become it.
    assert text.normalize_text(f"Hawai{apostrophe}i", "haw") == "hawaiʻi" == text.normalize_text("Hawai'i", "haw")


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("well\u2011known \u2013 \u2212 self\u2010made", "well-known - - self-made"),  # dashes, minus
        ("\u201cquoted\u201d \u201elow\u201d", '"quoted" "low"'),
        ("a\u00a0b\u202fc\u2009d\u3000e", "a b c d e"),  # no-break, narrow, thin, ideographic
        ("soft\u00adhy\u200bphen\ufeff", "softhyphen"),  # invisible characters dropped
    ],
)
def test_typographic_variants_fold_before_punctuation(raw, expected):
    keep = {"en": {"keep": "-\"'", "nfkc": False}}  # what survives shows what each variant became
    assert text.normalize_text(raw, "en", keep) == expected
    # With the defaults they are punctuation or spaces like their ASCII forms.
    assert text.normalize_text(raw, "en") == text.normalize_text(expected, "en")


@pytest.mark.parametrize(
    "raw,lang,expected",
    [
        (
            "El col·legi i la col\u2027lecció.",
            "ca",
            "el col·legi i la col·lecció",
        ),  # punt volat kept, look-alike folded
        ("col·legi", "es", "col legi"),  # only Catalan spells with it
        ("كتاب علي", "fa", "کتاب علی"),  # Arabic yeh/kaf -> Farsi yeh/keheh in Persian
        ("كتاب علي", "ar", "كتاب علي"),  # ... and not in Arabic
        ("مـــرحبا", "ar", "مرحبا"),  # tatweel is typography
    ],
)
def test_per_language_spelling_marks(raw, lang, expected):
    assert text.normalize_text(raw, lang) == expected


def test_typography_folding_is_an_option_and_keeps_persian_zwnj():
    assert text.normalize_text("It’s", "en", {"en": {"fold_typography": False}}) == "it s"
    assert text.normalize_text("می\u200cخواهم", "fa") == "می\u200cخواهم"  # ZWNJ is spelling
    assert text.normalize_text("l’homme", "fr", {"fr": {"keep": "’"}}) == "l'homme"  # keep folds too


def test_vocabulary_has_one_apostrophe_for_all_lookalikes():
    vocab = text.Vocabulary.build([("It’s", "en"), ("it's", "en"), ("don´t", "en"), ("we‘re", "en")])
    assert [t for t in vocab.tokens if t in text.APOSTROPHE_LOOKALIKES + "'"] == ["'"]
    assert vocab.unk_id not in vocab.encode("It’s", "en").tolist()


def test_per_language_override():
    assert text.normalize_text("Hello, World", "en", {"en": {"lowercase": False}}) == "Hello World"
    assert text.normalize_text("a-b", "en", {"en": {"keep": "-"}}) == "a-b"


def _demo_vocab():
    pairs = [(s, lang) for lang, ss in SENTENCES.items() for s in ss]
    return text.Vocabulary.build(pairs), pairs


def test_vocabulary_layout_and_round_trip():
    vocab, pairs = _demo_vocab()
    assert vocab.tokens[:5] == ["<pad>", "<s>", "</s>", "<unk>", "|"]
    assert vocab.blank_id == 0 and vocab.delimiter_id == 4
    for sentence, lang in pairs:
        ids = vocab.encode(sentence, lang)
        assert ids.dtype == np.int32 and ids.min() >= 4  # no unknowns, no specials
        assert vocab.decode(ids) == text.normalize_text(sentence, lang)
    assert vocab.encode("ok ok", "es").tolist().count(vocab.delimiter_id) == 1


def test_unknown_characters_map_to_unk():
    vocab, _ = _demo_vocab()
    assert vocab.encode("ʘ", "es").tolist() == [vocab.unk_id]


def test_json_round_trip_is_hf_vocab_format():
    vocab, _ = _demo_vocab()
    d = json.loads(vocab.to_json())
    assert d["<pad>"] == 0 and d["|"] == 4 and sorted(d.values()) == list(range(len(vocab)))
    again = text.Vocabulary.from_json(vocab.to_json())
    assert again.tokens == vocab.tokens
    with pytest.raises(ValueError):
        text.Vocabulary.from_json(json.dumps({"<pad>": 0, "a": 0}))


def test_decode_ctc_collapses_repeats_and_blanks():
    vocab = text.Vocabulary(["<pad>", "<s>", "</s>", "<unk>", "|", "a", "b"])
    # frames: a a _ a b | | b _  ->  "aab b"
    frames = [5, 5, 0, 5, 6, 4, 4, 6, 0]
    assert vocab.decode_ctc(frames) == "aab b"


def test_hf_tokenizer_reads_our_vocab(tmp_path):
    transformers = pytest.importorskip(
        "transformers", reason="compares with transformers' CTC tokenizer: pip install -c constraints.txt -e '.[torch]'"
    )
    vocab, _ = _demo_vocab()
    path = tmp_path / "vocab.json"
    path.write_text(vocab.to_json(), encoding="utf-8")
    tok = transformers.Wav2Vec2CTCTokenizer(str(path), word_delimiter_token="|")
    s = text.normalize_text("Mi hermano vive en Madrid.", "es")
    assert tok(s)["input_ids"] == vocab.encode(s, "es").tolist()
