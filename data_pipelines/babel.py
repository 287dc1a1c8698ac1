"""IARPA BABEL (LDC releases): conversational telephone speech, one package per language.

Distributed layout (e.g. LDC2016S06, IARPA Babel Assamese language pack IARPA-babel102b-v0.5a):

    <package>/conversational/<split>/audio/BABEL_OP1_102_<spk>_<date>_<time>_inLine.sph
    <package>/conversational/<split>/transcription/BABEL_OP1_102_<spk>_<date>_<time>_inLine.txt

with <split> "training", "dev" (and "eval", audio only). Audio is NIST SPHERE, 8 kHz mu-law, one
side of a call per file (inLine / outLine). A transcript alternates time marks and text:

    [0.000]
    <no-speech>
    [3.905]
    word word <breath> word
    [6.412]

and each text line is one segment, from the mark above it to the mark below it. Segments are cut
from the long recordings by those marks and resampled from 8 to 16 kHz at load; a segment of
[t0, t1) s is samples round(t0 * sr) .. round(t1 * sr) of the file, so round((t1 - t0) * 16000)
samples at 16 kHz up to one sample of rounding.

Transcripts are cleaned as Kaldi's `egs/babel/s5d/local/prepare_acoustic_training_data.pl` does
(ESPnet's BABEL recipe runs it): `<sta>`, `<male-to-female>`, `<female-to-male>` and `~` are
dropped; Kaldi maps vocal noises (`<lipsmack>`, `<breath>`, `<cough>`, `<laugh>`), other noises
(`<click>`, `<ring>`, `<dtmf>`, `<int>`), `<no-speech>` and the untranscribed-word tags (`(())`,
`<foreign>`, `<overlap>`, `<prompt>`) to noise / silence / OOV words; a character CTC vocabulary
has no such words, so they are removed here (as is any other `<...>` tag). A segment left without
words gets an empty transcript, which the CTC pipeline drops and counts (Kaldi drops it too).

Source config: `{"type": "babel", "path": <package> | <package>/conversational, "language": code
(default: from the BABEL language number in the file names, see BABEL_LANGUAGES), "splits":
{pipeline split: package split}}`. Default splits: train -> training, dev and test -> dev (the
LDC packages hold no eval transcripts; Kaldi/ESPnet report on this "dev10h" set).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np
import soundfile as sf

from data_pipelines import audio as audio_lib
from data_pipelines import sources

# BABEL language number (the third field of a file name) -> ISO 639 code, from the LDC catalog.
BABEL_LANGUAGES = {
    "101": "yue",  # Cantonese
    "102": "as",  # Assamese
    "103": "bn",  # Bengali
    "104": "ps",  # Pashto
    "105": "tr",  # Turkish
    "106": "tl",  # Tagalog
    "107": "vi",  # Vietnamese
    "201": "ht",  # Haitian Creole
    "202": "sw",  # Swahili
    "203": "lo",  # Lao
    "204": "ta",  # Tamil
    "205": "kmr",  # Kurmanji Kurdish
    "206": "zu",  # Zulu
    "207": "tpi",  # Tok Pisin
    "301": "ceb",  # Cebuano
    "302": "kk",  # Kazakh
    "303": "te",  # Telugu
    "304": "lt",  # Lithuanian
    "305": "gn",  # Guarani
    "306": "ig",  # Igbo
    "307": "am",  # Amharic
    "401": "mn",  # Mongolian
    "402": "jv",  # Javanese
    "403": "luo",  # Dholuo
    "404": "ka",  # Georgian
}
DEFAULT_SPLITS = {"train": "training", "dev": "dev", "test": "dev"}
# Kaldi's extract-segments --max-overshoot: a segment may end this far past the audio (clipped).
MAX_OVERSHOOT_SECONDS = 0.5

_TIME_MARK = re.compile(r"^\s*\[([0-9]+\.?[0-9]*)\]\s*$")
_DROP_TOKENS = {"~", "(())"}
_FILE_NAME = re.compile(r"^BABEL_[A-Z0-9]+_(\d{3})_")


def clean_transcript(line: str) -> str:
    """A BABEL transcript line without its non-speech tags (see the module docstring)."""
    words = [w for w in line.split() if w not in _DROP_TOKENS and not (w.startswith("<") and w.endswith(">"))]
    return " ".join(words)


def read_transcript(path: str) -> list[tuple[float, float, str]]:
    """(start s, end s, raw text) of every segment of one BABEL transcription file.

    Raises:
      sources.CorpusLayoutError: text before the first or after the last time mark, or time
        marks that go backwards (the message names the file and line).
    """
    segments, start, text, text_line = [], None, None, 0
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except UnicodeDecodeError as e:
        raise sources.CorpusLayoutError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for n, line in enumerate(lines, 1):
        m = _TIME_MARK.match(line)
        if m:
            t = float(m.group(1))
            if start is not None and t < start:
                raise sources.CorpusLayoutError(f"{path}:{n}: time mark [{t}] is before the previous [{start}]")
            if text is not None:
                segments.append((start, t, text))
            start, text = t, None
        elif line.strip():
            if start is None or text is not None:
                where = "before the first time mark" if start is None else "two text lines without a time mark"
                raise sources.CorpusLayoutError(f"{path}:{n}: text {where}")
            text, text_line = line.strip(), n
    if text is not None:
        raise sources.CorpusLayoutError(f"{path}:{text_line}: the last segment has no closing time mark")
    return segments


def split_dir(cfg: Mapping, split: str) -> str:
    """`<package>/conversational/<package split>` for pipeline split `split`."""
    root = cfg["path"]
    if os.path.isdir(os.path.join(root, "conversational")):
        root = os.path.join(root, "conversational")
    folder = dict(cfg.get("splits") or {}).get(split, DEFAULT_SPLITS.get(split, split))
    return os.path.join(root, folder)


def language_of(file_id: str, path: str) -> str:
    """The ISO code of a BABEL file name's language number.

    Raises:
      sources.CorpusLayoutError: the name does not follow BABEL's naming or the number is unknown.
    """
    m = _FILE_NAME.match(file_id)
    if not m or m.group(1) not in BABEL_LANGUAGES:
        raise sources.CorpusLayoutError(
            f"{path}: cannot tell the language from the file name (expected BABEL_<phase>_<language number>_...); "
            "set the source's 'language'"
        )
    return BABEL_LANGUAGES[m.group(1)]


def babel_source(cfg: Mapping, split: str) -> sources.Source:
    """One BABEL package split as a `Source` of time-marked segments with cleaned transcripts.

    Raises:
      sources.CorpusLayoutError: a missing audio/ or transcription/ folder, a transcript without
        its audio file, a malformed transcript, or time marks past the end of the audio (more
        than MAX_OVERSHOOT_SECONDS); each message names the file.
    """
    sdir = split_dir(cfg, split)
    tdir, adir = os.path.join(sdir, "transcription"), os.path.join(sdir, "audio")
    for d in (tdir, adir):
        if not os.path.isdir(d):
            raise sources.CorpusLayoutError(f"BABEL folder {d} not found (split {split!r})")
    transcripts = sorted(f for f in os.listdir(tdir) if f.endswith(".txt"))
    if not transcripts:
        raise sources.CorpusLayoutError(f"BABEL folder {tdir} holds no .txt transcripts")
    files, starts, stops, texts, langs, ids = [], [], [], [], [], []
    rates = []
    for name in transcripts:
        file_id = name[: -len(".txt")]
        txt = os.path.join(tdir, name)
        audio_path = next(
            (
                os.path.join(adir, file_id + e)
                for e in (".sph", ".wav")
                if os.path.exists(os.path.join(adir, file_id + e))
            ),
            None,
        )
        if audio_path is None:
            raise sources.CorpusLayoutError(f"{txt}: no audio file {file_id}.sph in {adir}")
        try:
            frames, sr = audio_lib.audio_info(audio_path)
        except audio_lib.AudioDecodeError as e:
            raise sources.CorpusLayoutError(f"{audio_path}: unreadable audio header ({e})") from None
        lang = cfg.get("language") or language_of(file_id, txt)
        for t0, t1, raw in read_transcript(txt):
            start, stop = round(t0 * sr), round(t1 * sr)
            if stop > frames + MAX_OVERSHOOT_SECONDS * sr:
                raise sources.CorpusLayoutError(
                    f"{txt}: segment [{t0}, {t1}] runs past the end of {os.path.basename(audio_path)} "
                    f"({frames / sr:.3f} s)"
                )
            files.append(audio_path)
            starts.append(min(start, frames))  # a segment wholly in the overshoot is empty (counted)
            stops.append(min(stop, frames))
            rates.append(sr)
            texts.append(clean_transcript(raw))
            langs.append(lang)
            ids.append(f"{txt}@{t0}-{t1}")
    starts_a, stops_a, rates_a = (np.asarray(x, np.int64) for x in (starts, stops, rates))
    lengths = np.round((stops_a - starts_a) * sources.SR / rates_a).astype(np.int64)  # [segments] at 16 kHz

    def load(i: int) -> np.ndarray:
        try:
            wav, sr = sf.read(files[i], start=int(starts_a[i]), stop=int(stops_a[i]), dtype="float32")
        except (sf.LibsndfileError, RuntimeError, ValueError) as e:
            raise audio_lib.AudioDecodeError(f"cannot decode {ids[i]}: {e}") from e
        if wav.size == 0:
            raise audio_lib.AudioDecodeError(f"no samples in {ids[i]}")
        return audio_lib.resample(audio_lib.downmix(wav), sr, sources.SR)  # [samples] at 16 kHz

    return sources.Source(f"babel:{sdir}", langs, lengths, texts, ids, load)
