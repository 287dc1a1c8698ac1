"""LM beam search (xlsr_jax.lm, flashlight-text from the `lm` extra), the ARPA writer, and the label
list built from a vocabulary by token name (decoding.CTCLabels) against transformers' tokenizer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from xlsr_jax import decoding, lm

TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "|", "d", "e", "h", "l", "o", "r", "t", "w"]
SENTENCES = ["hello world", "hello there world", "world hello", "the world"]


def _labels(tokens=TOKENS, **settings):
    return decoding.CTCLabels.from_vocab({t: i for i, t in enumerate(tokens)}, settings)


def _emissions(labels, frames: str) -> np.ndarray:
    """log-probs [T, V]: each character of `frames` ('_' = blank) at -0.1, the rest at -8."""
    x = np.full((len(frames), len(labels)), -8.0, np.float32)
    for t, c in enumerate(frames):
        x[t, labels.blank_id if c == "_" else labels.tokens.index(c)] = -0.1
    return x


def _read_arpa(path):
    """An independent ARPA reader: {ngram tuple: (log10 p, log10 backoff)}."""
    table, order = {}, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.endswith("-grams:"):
                order = int(line[1])
            elif order and line and not line.startswith("\\"):
                cells = line.split("\t")
                table[tuple(cells[1].split())] = (float(cells[0]), float(cells[2]) if len(cells) > 2 else 0.0)
    return table


def _arpa_prob(table, gram):
    if gram in table:
        return 10 ** table[gram][0]
    return 10 ** table.get(gram[:-1], (0.0, 0.0))[1] * _arpa_prob(table, gram[1:])


def test_arpa_writer_is_a_normalised_interpolated_model(tmp_path):
    path = str(tmp_path / "lm.arpa")
    sizes = lm.write_arpa(SENTENCES, path, order=3)
    table = _read_arpa(path)
    assert sizes == {"1": 7, "2": len([g for g in table if len(g) == 2]), "3": len([g for g in table if len(g) == 3])}
    words = ["hello", "world", "there", "the", "</s>", "<unk>"]
    # Every context's distribution sums to one, through the back-off recursion.
    for context in [(), ("<s>",), ("hello",), ("<s>", "hello"), ("the", "world"), ("world", "hello"), ("there",)]:
        assert sum(_arpa_prob(table, (*context, w)) for w in words) == pytest.approx(1.0, abs=1e-5), context
    # A seen trigram: (c - D) / c(h) + b(h) p(w | h'), from the counts by hand.
    # c(hello world) = 1 of c(hello .) = 3 (world, there, </s>); c(<s> hello) = 2 -> (hello world, hello there).
    d = lm.DISCOUNT
    p_bigram = (1 - d) / 3 + d * 3 / 3 * _arpa_prob(table, ("world",))
    assert _arpa_prob(table, ("hello", "world")) == pytest.approx(p_bigram, rel=1e-5)
    p_trigram = (1 - d) / 2 + d * 2 / 2 * p_bigram
    assert _arpa_prob(table, ("<s>", "hello", "world")) == pytest.approx(p_trigram, rel=1e-5)
    assert lm.arpa_unigrams(path) == sorted({w for s in SENTENCES for w in s.split()})
    with pytest.raises(ValueError, match="no words"):
        lm.write_arpa(["", " "], str(tmp_path / "empty.arpa"))


def test_lm_beam_search_fixes_a_greedy_misspelling(tmp_path):
    labels = _labels()
    arpa = str(tmp_path / "lm.arpa")
    lm.write_arpa(SENTENCES * 3, arpa, order=3)
    # "hello world" where the blank that would separate the two l's is a little less likely than
    # another l at that frame: greedy collapses the l's into "helo".
    x = _emissions(labels, "hhee" + "lll" + "oo|wworrlldd")
    x[5, labels.blank_id], x[5, labels.tokens.index("l")] = -1.0, -0.5
    assert labels.decode_ctc(x.argmax(-1)) == "helo world"
    beam = lm.BeamSearchDecoder(labels, arpa, alpha=1.0, beta=0.0, beam_width=16)
    hyp = beam.decode_one(x)
    assert hyp.text == "hello world"
    assert [labels.tokens[i] for i, _, _ in hyp.tokens] == list("hello|world")
    # Without the LM the same beam keeps the acoustically best spelling.
    assert lm.BeamSearchDecoder(labels, beam_width=16).decode_one(x).text == "helo world"


@pytest.mark.parametrize("seed", range(4))
def test_beam_of_one_without_lm_weight_is_greedy(tmp_path, seed):
    rng = np.random.default_rng(seed)
    # A hub-style layout: characters first, the blank last (as the XLS-R fine-tuning blog builds it).
    tokens = ["|", "d", "e", "h", "l", "o", "r", "w", "[UNK]", "[PAD]"]
    labels = _labels(tokens, pad_token="[PAD]", unk_token="[UNK]", bos_token=None, eos_token=None)
    log_probs = np.log(rng.dirichlet(np.full(len(tokens), 0.3), size=(3, 40))).astype(np.float32)
    padding = np.zeros((3, 40), bool)
    padding[1, 30:] = True
    ids = np.where(padding, labels.blank_id, log_probs.argmax(-1))
    greedy = [labels.decode_ctc(row) for row in ids]
    beam = lm.BeamSearchDecoder(labels, beam_width=1, alpha=0.0, beta=0.0)
    assert beam.decode(log_probs, padding) == greedy
    # With a loaded LM at zero weight, on emissions whose greedy words are in its lexicon.
    arpa = str(tmp_path / "lm.arpa")
    lm.write_arpa(SENTENCES, arpa)
    x = _emissions(labels, "hhell_looo||wworrlld")
    x += rng.uniform(-0.05, 0.0, x.shape).astype(np.float32)
    with_lm = lm.BeamSearchDecoder(labels, arpa, beam_width=1, alpha=0.0, beta=0.0)
    assert with_lm.decode_one(x).text == labels.decode_ctc(x.argmax(-1)) == "hello world"


def test_lm_decoder_errors_name_the_file(tmp_path):
    labels = _labels()
    with pytest.raises(ValueError, match="no such LM file"):
        lm.BeamSearchDecoder(labels, str(tmp_path / "missing.arpa"))
    binary = tmp_path / "lm.bin"
    binary.write_bytes(b"mmap lm http://kheafield.com/code format version 5\n\0\0")
    with pytest.raises(ValueError, match="lm.bin"):
        lm.BeamSearchDecoder(labels, str(binary))
    arpa = str(tmp_path / "lm.arpa")
    lm.write_arpa(["ωμέγα"], arpa)
    with pytest.raises(ValueError, match="no word of the lexicon can be spelled"):
        lm.BeamSearchDecoder(labels, arpa)


# Layouts transformers' Wav2Vec2CTCTokenizer accepts: ours (fairseq order), the blog's (characters
# first, [UNK] and [PAD] last, no <s>/</s>), upper-case letters with do_lower_case, no delimiter.
LAYOUTS = {
    "fairseq": (TOKENS, {}),
    "blog": (
        ["|", "d", "e", "h", "l", "o", "r", "t", "w", "[UNK]", "[PAD]"],
        {"pad_token": "[PAD]", "unk_token": "[UNK]"},
    ),
    "upper": (["<pad>", "<unk>", "|", "D", "E", "H", "L", "O", "R", "W"], {"do_lower_case": True}),
    "no_delimiter": (["<pad>", "<s>", "</s>", "<unk>", "a", "b", " ", "c"], {"word_delimiter_token": None}),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_greedy_transcripts_equal_transformers_tokenizer(tmp_path, layout):
    transformers = pytest.importorskip("transformers")
    tokens, settings = LAYOUTS[layout]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), **settings)
    labels = _labels(tokens, **settings)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(tokens), size=(16, 30))
    ids[:, ::3] = labels.blank_id  # blanks between repeats, as CTC outputs have
    assert [labels.decode_ctc(row) for row in ids] == tokenizer.batch_decode(ids)
    # pyctcdecode's alphabet: one blank, unique entries (its "duplicate entries" check).
    alphabet = labels.pyctcdecode_labels()
    assert alphabet.count("") == 1 and len(set(alphabet)) == len(alphabet)
    assert alphabet[labels.blank_id] == ""


def test_unsupported_vocabularies_fail_in_one_line():
    with pytest.raises(decoding.UnsupportedVocabularyError, match="pad_token '<pad>'"):
        decoding.CTCLabels.from_vocab({"a": 0, "|": 1})
    with pytest.raises(decoding.UnsupportedVocabularyError, match="nested"):
        decoding.CTCLabels.from_vocab({"eng": {"<pad>": 0}})
    with pytest.raises(decoding.UnsupportedVocabularyError, match="permutation"):
        decoding.CTCLabels.from_vocab({"<pad>": 0, "a": 2})


def test_tune_ranks_alpha_beta_by_wer():
    refs = ["hello world"]
    rows = lm.tune(lambda a, b: ["hello world" if a > 0.5 else "helo world"], refs, [0.0, 1.0], [0.0])
    assert rows[0] == {"alpha": 1.0, "beta": 0.0, "wer": 0.0, "cer": 0.0}
    assert math.isclose(rows[1]["wer"], 0.5)
