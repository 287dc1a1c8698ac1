"""Target text for speech translation: sentencepiece pieces and target-language tokens.

The ids follow transformers' `MBart50Tokenizer` (the tokenizer of the XLS-R translation models,
fairseq's mBART-50 dictionary), so a `sentencepiece.bpe.model` from those models gives their ids:

  0 <s>, 1 <pad>, 2 </s>, 3 <unk>          fairseq's specials
  sentencepiece piece p (p >= 3)  -> p + 1  (FAIRSEQ_OFFSET; sentencepiece's own 0/1/2 are
                                             <unk>/<s>/</s>, mapped onto the specials above)
  then one token per language code (`MBART50_LANGUAGE_CODES`, in that order), then <mask>.

With mBART-50's 250000 pieces that is 250054 ids, the decoder's vocabulary. A target sentence
is `[language token] pieces </s>` (MBart50Tokenizer's target mode); the decoder reads it
shifted right behind `decoder_start_token_id` (</s>) and generation forces the language token
first (`forced_bos_token_id`), so one model can translate into many languages.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence

import numpy as np

BOS, PAD, EOS, UNK = 0, 1, 2, 3
FAIRSEQ_OFFSET = 1

# transformers' models/mbart50/tokenization_mbart50.py FAIRSEQ_LANGUAGE_CODES (mBART-50's order).
MBART50_LANGUAGE_CODES = (
    "ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN", "it_IT",
    "ja_XX", "kk_KZ", "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO", "ru_RU", "si_LK",
    "tr_TR", "vi_VN", "zh_CN", "af_ZA", "az_AZ", "bn_IN", "fa_IR", "he_IL", "hr_HR", "id_ID", "ka_GE",
    "km_KH", "mk_MK", "ml_IN", "mn_MN", "mr_IN", "pl_PL", "ps_AF", "pt_XX", "sv_SE", "sw_KE", "ta_IN",
    "te_IN", "th_TH", "tl_XX", "uk_UA", "ur_PK", "xh_ZA", "gl_ES", "sl_SI",
)  # fmt: skip

# Common Voice / CoVoST-2 locale -> mBART-50 code, for the CoVoST-2 languages mBART-50 has.
LOCALE_TO_MBART50 = {
    "en": "en_XX", "de": "de_DE", "fr": "fr_XX", "es": "es_XX", "it": "it_IT", "ru": "ru_RU",
    "zh-CN": "zh_CN", "pt": "pt_XX", "fa": "fa_IR", "et": "et_EE", "mn": "mn_MN", "nl": "nl_XX",
    "tr": "tr_TR", "ar": "ar_AR", "sv-SE": "sv_SE", "lv": "lv_LV", "sl": "sl_SI", "ta": "ta_IN",
    "ja": "ja_XX", "id": "id_ID", "hi": "hi_IN", "sw": "sw_KE",
}  # fmt: skip


def language_code(language: str) -> str:
    """The mBART-50 code for a locale ('en' -> 'en_XX'); a code already in that form is kept.

    Raises:
      ValueError naming the language when mBART-50 has no token for it.
    """
    if language in MBART50_LANGUAGE_CODES:
        return language
    if language in LOCALE_TO_MBART50:
        return LOCALE_TO_MBART50[language]
    raise ValueError(
        f"no mBART-50 language token for {language!r}; known locales: {sorted(LOCALE_TO_MBART50)} "
        f"or codes {list(MBART50_LANGUAGE_CODES)}"
    )


class TargetTokenizer:
    """A sentencepiece model with mBART-50's id layout (see the module docstring).

    Args:
      model: path of a sentencepiece model file, or its bytes.
    """

    def __init__(self, model: str | os.PathLike | bytes):
        import sentencepiece as spm

        proto = model if isinstance(model, bytes) else open(os.fspath(model), "rb").read()  # noqa: SIM115
        self.sp = spm.SentencePieceProcessor(model_proto=proto)
        self.num_pieces = self.sp.get_piece_size()
        self.language_ids = {
            code: self.num_pieces + i + FAIRSEQ_OFFSET for i, code in enumerate(MBART50_LANGUAGE_CODES)
        }
        self.mask_id = self.num_pieces + len(MBART50_LANGUAGE_CODES) + FAIRSEQ_OFFSET
        self.truncated = 0  # sentences cut to max_length by `encode` so far

    @property
    def vocab_size(self) -> int:
        """Ids in use: pieces, specials, language tokens and <mask> (250054 for mBART-50)."""
        return self.mask_id + 1

    def language_id(self, language: str) -> int:
        """The id of a target-language token, from a locale ('en') or an mBART-50 code."""
        return self.language_ids[language_code(language)]

    def _piece_ids(self, text: str) -> list[int]:
        ids = self.sp.encode(text, out_type=int)
        # sentencepiece's <unk> is its id 0; every other piece moves up by the fairseq offset.
        return [UNK if i == self.sp.unk_id() else i + FAIRSEQ_OFFSET for i in ids]

    def encode(self, text: str, language: str, max_length: int | None = None) -> list[int]:
        """`[language token] pieces </s>` for a target sentence.

        A sentence longer than max_length tokens is cut to max_length (its </s> kept last) and
        counted in `self.truncated`; it is never an error.
        """
        ids = [self.language_id(language)] + self._piece_ids(text) + [EOS]
        if max_length is not None and len(ids) > max_length:
            if max_length < 2:
                raise ValueError(f"max_length must be >= 2 (language token + </s>), got {max_length}")
            ids = ids[: max_length - 1] + [EOS]
            self.truncated += 1
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of generated ids: specials, language tokens and <mask> are dropped."""
        pieces = [int(i) - FAIRSEQ_OFFSET for i in ids if FAIRSEQ_OFFSET + 3 <= int(i) < self.num_pieces + 1]
        return self.sp.decode(pieces)


def pad_targets(sequences: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """int32 [batch, length] labels, right-padded with <pad> (sequences must fit)."""
    out = np.full((len(sequences), length), PAD, np.int32)
    for row, ids in enumerate(sequences):
        if len(ids) > length:
            raise ValueError(f"target of {len(ids)} tokens does not fit length {length}")
        out[row, : len(ids)] = ids
    return out


def train_sentencepiece(sentences: Iterable[str], vocab_size: int, model_type: str = "unigram") -> bytes:
    """Trains a small sentencepiece model (the demo's target vocabulary); returns its bytes.

    Unigram, as mBART's own `sentencepiece.bpe.model` despite its name; transformers' fast
    MBart50Tokenizer reproduces a unigram model's pieces exactly (its BPE conversion does not).

    `vocab_size` counts sentencepiece's pieces (its <unk>, <s>, </s> included); the decoder's
    vocabulary is then `TargetTokenizer(model).vocab_size`. Deterministic for the same input.
    """
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(sentences)),
        model_writer=out,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return out.getvalue()
