"""Transcript normalisation and the character vocabulary for CTC fine-tuning.

The vocabulary follows Hugging Face's `Wav2Vec2CTCTokenizer` layout so `vocab.json` files move both
ways: `<pad>` = 0 doubles as the CTC blank, then `<s>`, `</s>`, `<unk>`, the word delimiter `|`,
then the characters seen in the training transcripts of every language, sorted.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

BLANK = "<pad>"
SPECIAL_TOKENS = (BLANK, "<s>", "</s>", "<unk>")
WORD_DELIMITER = "|"

# Languages whose dotted/dotless I pairs lowercase differently from Unicode's default.
_TURKIC_CASING = {"tr", "az", "crh", "gag", "tt"}
# Scripts written without spaces between words: spaces (if any) are dropped, not delimited.
_NO_WORD_SPACES = {"zh", "zh-CN", "zh-TW", "zh-HK", "ja", "th", "lo", "my", "km", "yue"}

DEFAULT_TEXT_OPTIONS = {
    "nfkc": True,  # fold compatibility forms (full-width Latin, ligatures)
    "lowercase": True,
    "strip_punctuation": True,  # Unicode categories P* and S* (keeps combining marks: Devanagari)
    "keep": "'",  # characters kept even when punctuation is stripped ("'" matters in English)
    "word_spaces": True,  # False for scripts without word spaces (auto for zh, ja, th, ...)
}


def text_options(language: str, per_language: Mapping | None = None) -> dict:
    """Options for `language`: defaults, then built-in language rules, then per_language[lang]."""
    opts = dict(DEFAULT_TEXT_OPTIONS)
    if language in _NO_WORD_SPACES or language.split("-")[0] in {"zh", "ja", "th"}:
        opts["word_spaces"] = False
    if per_language and language in per_language:
        opts.update(dict(per_language[language]))
    return opts


def normalize_text(text: str, language: str, per_language: Mapping | None = None) -> str:
    """Normalises a transcript for CTC: Unicode NFKC, lowercase (Turkic I rules where needed),
    punctuation removed, whitespace collapsed. Options per language via `per_language`."""
    opts = text_options(language, per_language)
    if opts["nfkc"]:
        text = unicodedata.normalize("NFKC", text)
    if opts["lowercase"]:
        if language.split("-")[0] in _TURKIC_CASING:
            text = text.replace("I", "ı").replace("İ", "i")
        text = text.lower()
        if language.split("-")[0] in _TURKIC_CASING:
            text = text.replace("i̇", "i")  # lower("İ") in other paths leaves i + combining dot
    if opts["strip_punctuation"]:
        keep = set(opts["keep"])
        text = "".join(" " if unicodedata.category(c)[0] in "PS" and c not in keep else c for c in text)
    words = text.split()
    return " ".join(words) if opts["word_spaces"] else "".join(words)


class Vocabulary:
    """Character vocabulary with CTC blank (id 0) and word delimiter `|`.

    `encode(text, lang)` normalises then maps characters (space -> `|`, unknown -> `<unk>`);
    `decode(ids)` maps back (specials dropped, `|` -> space); `decode_ctc(ids)` first collapses
    repeats and removes blanks (greedy CTC decoding of argmax frames).
    """

    def __init__(self, tokens: Sequence[str], text_config: Mapping | None = None):
        tokens = list(tokens)
        if tokens[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS) or WORD_DELIMITER not in tokens:
            raise ValueError(f"vocabulary must start with {SPECIAL_TOKENS} and contain '|'")
        if len(set(tokens)) != len(tokens):
            raise ValueError("duplicate tokens in vocabulary")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        self.text_config = dict(text_config or {})
        self.blank_id = 0
        self.unk_id = self.index["<unk>"]
        self.delimiter_id = self.index[WORD_DELIMITER]
        self.special_ids = frozenset(self.index[t] for t in SPECIAL_TOKENS)  # by name, not position

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, transcripts: Iterable[tuple[str, str]], text_config: Mapping | None = None) -> Vocabulary:
        """Builds the vocabulary from (text, language) pairs (normalised first)."""
        per_lang = (text_config or {}).get("per_language")
        chars = set()
        for text, lang in transcripts:
            chars.update(normalize_text(text, lang, per_lang).replace(" ", ""))
        return cls([*SPECIAL_TOKENS, WORD_DELIMITER, *sorted(chars)], text_config)

    def normalize(self, text: str, language: str) -> str:
        """The normalisation `encode` applies."""
        return normalize_text(text, language, self.text_config.get("per_language"))

    def encode(self, text: str, language: str) -> np.ndarray:
        """Transcript -> int32 [num_tokens] (normalised; spaces become `|`)."""
        norm = self.normalize(text, language).replace(" ", WORD_DELIMITER)
        return np.array([self.index.get(c, self.unk_id) for c in norm], dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        """int ids -> text; special tokens are dropped and `|` becomes a space."""
        out = []
        for i in ids:
            i = int(i)
            if i in self.special_ids or not 0 <= i < len(self.tokens):
                continue
            t = self.tokens[i]
            out.append(" " if t == WORD_DELIMITER else t)
        return " ".join("".join(out).split())

    def decode_ctc(self, ids: Iterable[int]) -> str:
        """Greedy CTC: collapse repeated ids, drop blanks, then `decode`. ids: [frames]."""
        ids = [int(i) for i in ids]
        kept = [i for n, i in enumerate(ids) if (n == 0 or i != ids[n - 1]) and i != self.blank_id]
        return self.decode(kept)

    def to_json(self) -> str:
        """HF `vocab.json` content: {token: id}."""
        return json.dumps({t: i for i, t in enumerate(self.tokens)}, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str, text_config: Mapping | None = None) -> Vocabulary:
        """Reads HF `vocab.json` content (ids must be 0..n-1)."""
        mapping = json.loads(text)
        tokens = [None] * len(mapping)
        for t, i in mapping.items():
            if not 0 <= i < len(tokens) or tokens[i] is not None:
                raise ValueError(f"vocab ids must be a permutation of 0..{len(tokens) - 1}")
            tokens[i] = t
        return cls(tokens, text_config)
