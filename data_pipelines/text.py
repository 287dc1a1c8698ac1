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

# Typographic variants folded to one form before anything else (Common Voice text has them all;
# editors and phone keyboards "smarten" ASCII). Without this `It’s` (U+2019) loses its apostrophe
# to punctuation stripping and becomes two words while `It's` stays one, and the vocabulary splits
# one sound over several look-alike symbols.
APOSTROPHE_LOOKALIKES = (
    "\u2019"  # ’ right single quotation mark: the typographic apostrophe
    "\u2018"  # ‘ left single quotation mark (autocorrect's wrong-way apostrophe: ‘til, ‘90s)
    "\u02bc"  # ʼ modifier letter apostrophe (Ukrainian, Uzbek, many African orthographies)
    "\u02bb"  # ʻ modifier letter turned comma (ʻokina; Uzbek oʻ, gʻ)
    "\u00b4"  # ´ acute accent used as an apostrophe (NFKC would turn it into a space + accent)
    "\u0060"  # ` grave accent used as an apostrophe
    "\u2032"  # ′ prime
    "\u02b9"  # ʹ modifier letter prime
    "\uff07"  # ＇ full-width apostrophe
)
_TYPOGRAPHIC_FOLDS = {
    **{ord(c): "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"},  # dashes, minus
    **{ord(c): '"' for c in "\u201c\u201d\u201e\u201f\u2033\uff02"},  # double quotes, double prime
    # No-break, narrow no-break (French "Quoi !"), figure, thin, ideographic and other spaces.
    **{ord(c): " " for c in "\u00a0\u2007\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))},
    # Invisible characters that would otherwise become vocabulary symbols: soft hyphen, zero-width
    # space, word joiner, BOM, and the Arabic tatweel (a letter-shaped elongation stroke).
    # (ZWNJ/ZWJ are left alone: Persian and Indic spelling uses them.)
    **{ord(c): None for c in "\u00ad\u200b\u2060\ufeff\u0640"},
}
# Languages that write the ʻokina (U+02BB) as a letter: apostrophe look-alikes fold to it instead.
_OKINA_LANGUAGES = {"haw", "sm", "to", "ty"}
# Spelling marks that look like punctuation, per language: kept through stripping, look-alikes
# folded to them. Catalan's punt volat (col·legi) would otherwise split words in two.
_LANGUAGE_KEEP = {"ca": "\u00b7"}
_LANGUAGE_FOLDS = {
    "ca": {ord(c): "\u00b7" for c in "\u2027\u22c5\u2219\u0387\u2022"},  # hyphenation point, dot operator, ...
    # Persian is written with Farsi yeh and keheh; Arabic-keyboard text has the Arabic letters,
    # which would make two vocabulary symbols of one.
    "fa": {ord("\u064a"): "\u06cc", ord("\u0649"): "\u06cc", ord("\u0643"): "\u06a9"},
}

DEFAULT_TEXT_OPTIONS = {
    "fold_typography": True,  # apostrophe/dash/quote/space look-alikes -> one form (before NFKC)
    "apostrophe": "'",  # what the apostrophe look-alikes fold to (ʻ for haw, sm, to, ty)
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
    base = language.split("-")[0]
    if base in _OKINA_LANGUAGES:
        opts["apostrophe"] = "\u02bb"
    if base in _LANGUAGE_KEEP:
        opts["keep"] += _LANGUAGE_KEEP[base]
    if per_language and language in per_language:
        opts.update(dict(per_language[language]))
    return opts


def fold_typography(text: str, apostrophe: str = "'") -> str:
    """Folds typographic look-alikes to one form: every apostrophe look-alike to `apostrophe`,
    dashes and the minus sign to "-", double quotes to '"', no-break and other Unicode spaces to
    " ", and drops soft hyphens and zero-width spaces."""
    text = text.translate(_TYPOGRAPHIC_FOLDS)
    return text.translate({ord(c): apostrophe for c in APOSTROPHE_LOOKALIKES + "'" if c != apostrophe})


def normalize_text(text: str, language: str, per_language: Mapping | None = None) -> str:
    """Normalises a transcript for CTC: typographic look-alikes folded, Unicode NFKC, lowercase
    (Turkic I rules where needed), punctuation removed, whitespace collapsed. Options per
    language via `per_language` (see DEFAULT_TEXT_OPTIONS)."""
    opts = text_options(language, per_language)
    keep = opts["keep"]
    if opts["fold_typography"]:
        # Before NFKC (which splits ´ into a space and a combining accent) and before stripping
        # (which must see `It’s` as `It's`). `keep` is folded too: keep="’" means the apostrophe.
        text = fold_typography(text, opts["apostrophe"]).translate(_LANGUAGE_FOLDS.get(language.split("-")[0], {}))
        keep = fold_typography(keep, opts["apostrophe"])
    if opts["nfkc"]:
        text = unicodedata.normalize("NFKC", text)
    if opts["lowercase"]:
        if language.split("-")[0] in _TURKIC_CASING:
            text = text.replace("I", "ı").replace("İ", "i")
        text = text.lower()
        if language.split("-")[0] in _TURKIC_CASING:
            text = text.replace("i̇", "i")  # lower("İ") in other paths leaves i + combining dot
    if opts["strip_punctuation"]:
        keep = set(keep)
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
