"""Tiny synthetic copies of the benchmark corpora in their distributed layouts (espeak-ng speech).

VoxLingua107 (language folders of 16 kHz wav), VoxPopuli (asr_<split>.tsv + <year>/<id>.ogg) and
BABEL (NIST SPHERE 8 kHz mu-law recordings + time-marked transcripts), each written in a few
seconds. The writers return what a reader must find, so tests compare against it.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import audio as audio_lib
from data_pipelines import make_demo_corpus

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt install espeak-ng)"
)

PHRASES = {
    "es": ["el perro come", "la casa es grande", "hoy hace sol", "mi madre canta", "vamos al mar", "agua fría"],
    "sw": ["habari ya asubuhi", "mtoto anacheza", "nyumba kubwa", "tunakwenda sokoni", "maji safi", "asante sana"],
    "tr": ["bugün hava güzel", "kedi süt içer", "ev büyük", "okula gidiyoruz", "deniz mavi", "çok teşekkürler"],
    "hr": ["dobro jutro", "pas jede kruh", "kuća je velika", "idemo na more", "voda je hladna", "hvala lijepa"],
}


def speak(text: str, voice: str, sampling_rate: int) -> np.ndarray:
    """espeak-ng speech, trimmed, at `sampling_rate`: float32 [samples] in [-1, 1]."""
    wav, sr = make_demo_corpus.synthesize(text, voice, speed=170, pitch=50)
    wav = make_demo_corpus.trim_silence(wav, sr)
    return audio_lib.resample(wav.astype(np.float32), sr, sampling_rate)


def write_voxlingua107(root: str, per_split=(("train", 3), ("dev", 2)), languages=("es", "sw", "tr")) -> dict:
    """`root/<code>/*.wav` (train) and `root/dev/<code>/*.wav`; returns {split: {path: (code, samples)}}."""
    out = {}
    for split, n in per_split:
        base = root if split == "train" else os.path.join(root, split)
        out[split] = {}
        for code in languages:
            os.makedirs(os.path.join(base, code), exist_ok=True)
            for i in range(n):
                k = i if split == "train" else len(PHRASES[code]) - 1 - i
                wav = speak(PHRASES[code][k], code, 16000)
                start = 3.0 * i
                name = f"vid{code}{i}__U__S{i}---{start:09.3f}-{start + len(wav) / 16000:09.3f}.wav"
                path = os.path.join(base, code, name)
                sf.write(path, wav, 16000, subtype="PCM_16")
                out[split][path] = (code, len(wav))
    return out


def write_voxpopuli(root: str, per_split=(("train", 3), ("dev", 2), ("test", 1)), languages=("es", "hr")) -> dict:
    """`root/transcribed_data/<lang>/asr_<split>.tsv` + `<year>/<id>.ogg` (16 kHz Vorbis).

    Returns {split: {path: (lang, normalized_text, raw_text, samples)}}."""
    out = {}
    header = ["id", "raw_text", "normalized_text", "speaker_id", "split", "gender", "is_gold_transcript", "accent"]
    for lang in languages:
        ldir = os.path.join(root, "transcribed_data", lang)
        k = 0
        for split, n in per_split:
            out.setdefault(split, {})
            rows = []
            for i in range(n):
                year = "2019" if i % 2 else "2020"
                utt = f"{year}0115-0900-PLENARY-{k}-{lang}_{year}0115-10:0{i}:00_{i}"
                text = PHRASES[lang][k % len(PHRASES[lang])]
                raw = text.capitalize() + "."
                wav = speak(text, lang, 16000)
                os.makedirs(os.path.join(ldir, year), exist_ok=True)
                path = os.path.join(ldir, year, utt + ".ogg")
                sf.write(path, wav, 16000, format="OGG", subtype="VORBIS")
                rows.append([utt, raw, text, f"spk{k}", split, "female", "True", "None"])
                out[split][path] = (lang, text, raw, len(wav))
                k += 1
            with open(os.path.join(ldir, f"asr_{split}.tsv"), "w", encoding="utf-8") as f:
                f.write("\t".join(header) + "\n")
                f.writelines("\t".join(r) + "\n" for r in rows)
    return out


BABEL_PACKAGE = "IARPA_BABEL_OP2_202"  # Swahili's language number is 202


def write_babel(root: str, recordings=(("training", 2), ("dev", 1))) -> dict:
    """`root/conversational/<split>/{audio/*.sph, transcription/*.txt}` (8 kHz mu-law SPHERE).

    Each recording alternates silence (`<no-speech>` segments) and spoken phrases, one of them
    tagged with `<breath>` and `(())`. Returns {split: [(sph, start_s, end_s, clean_text)]} in
    reading order; every time mark is a whole number of milliseconds (8 samples at 8 kHz)."""
    sr = 8000
    out = {}
    phrases = PHRASES["sw"]
    k = 0
    for split, n in recordings:
        sdir = os.path.join(root, "conversational", split)
        os.makedirs(os.path.join(sdir, "audio"), exist_ok=True)
        os.makedirs(os.path.join(sdir, "transcription"), exist_ok=True)
        out[split] = []
        for r in range(n):
            file_id = f"BABEL_OP2_202_{10100 + k}_20130312_10{r}000_{'inLine' if r % 2 == 0 else 'outLine'}"
            sph = os.path.join(sdir, "audio", file_id + ".sph")
            pieces, lines, t = [], [], 0
            for j in range(2):
                silence = np.zeros(8 * (400 + 100 * j), np.float32)  # 0.4 / 0.5 s
                speech = speak(phrases[k % len(phrases)], "sw", sr)
                speech = np.pad(speech, (0, -len(speech) % 8))  # whole milliseconds
                text = phrases[k % len(phrases)]
                raw = text if j == 0 else f"<breath> {text} (())"
                for wav, line, clean in ((silence, "<no-speech>", ""), (speech, raw, text)):
                    lines += [f"[{t / sr:.3f}]", line]
                    out[split].append((sph, t / sr, (t + len(wav)) / sr, clean))
                    pieces.append(wav)
                    t += len(wav)
                k += 1
            lines.append(f"[{t / sr:.3f}]")
            sf.write(sph, np.concatenate(pieces), sr, format="NIST", subtype="ULAW")
            with open(os.path.join(sdir, "transcription", file_id + ".txt"), "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
    return out


def arrange_demo_as_voxlingua(out: str, languages=("ar", "es", "zh-CN")) -> list[str]:
    """The shipped corpus in VoxLingua107's layout: its train clips as `out/<code>/*.wav`, its
    held-out test clips as the benchmark's `out/dev/<code>/*.wav` (16 kHz wav, as VoxLingua107
    is distributed); "zh-CN" becomes VoxLingua107's "zh". Returns the codes."""
    import csv

    import data_pipelines

    codes = []
    for locale in languages:
        code = locale.split("-")[0]
        codes.append(code)
        for split, folder in (("train", os.path.join(out, code)), ("test", os.path.join(out, "dev", code))):
            os.makedirs(folder, exist_ok=True)
            ldir = os.path.join(data_pipelines.DEMO_CORPUS_DIR, locale)
            with open(os.path.join(ldir, f"{split}.tsv"), encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
            for row in rows:
                wav = audio_lib.load_audio(os.path.join(ldir, "clips", row["path"]))
                sf.write(os.path.join(folder, row["path"].rsplit(".", 1)[0] + ".wav"), wav, 16000, subtype="PCM_16")
    return codes
