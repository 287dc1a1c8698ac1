"""Regenerates the shipped multilingual demo corpus (`data_pipelines/demo_corpus/`).

The corpus is synthetic speech from Debian's `espeak-ng`, in Common Voice layout so the same code
path reads it and a real Common Voice release:

    demo_corpus/<locale>/clips/common_voice_<locale>_<n>.mp3     16 kHz mono MP3 (~17 kbit/s ABR)
    demo_corpus/<locale>/{train,dev,test}.tsv                      client_id, path, sentence, ...,
                                                                   locale (Common Voice v13 columns)
    demo_corpus/<locale>/clip_durations.tsv                        clip, duration[ms] (as CV ships)

Sentences come from `demo_sentences.py` (written for this corpus). Each sentence is spoken twice,
each time with a different espeak-ng voice variant, speed, pitch and level, so a split is not one
voice. Sentences are disjoint across splits (30 train, 5 dev, 5 test per language, so 60/10/10
utterances). Everything is seeded: the same espeak-ng build gives the same files.

Usage:
    python -m data_pipelines.make_demo_corpus [--out data_pipelines/demo_corpus] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zlib

import numpy as np
import soundfile as sf
import soxr

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_pipelines.demo_sentences import ESPEAK_VOICES, SENTENCES
from xlsr_jax.constants import SAMPLE_RATE  # noqa: E402

# espeak-ng voice variants that still sound like speech (robots, whisper and croak left out).
VARIANTS = [
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "klatt",
    "klatt2",
    "klatt3",
    "adam",
    "david",
    "john",
    "paul",
    "max",
    "grandma",
    "grandpa",
    "steph",
    "linda",
]
SPLITS = (("train", 0, 30), ("dev", 30, 35), ("test", 35, 40))
REPEATS = 2  # utterances per sentence, each with another voice
TSV_COLUMNS = [
    "client_id",
    "path",
    "sentence",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accents",
    "variant",
    "locale",
    "segment",
]


def synthesize(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """Speaks `text` with espeak-ng; returns (float32 [samples] mono waveform, sample rate)."""
    proc = subprocess.run(
        [
            "espeak-ng",
            "-v",
            voice,
            "-s",
            str(speed),
            "-p",
            str(pitch),
            "--stdout",
            text,
        ],
        check=True,
        capture_output=True,
    )
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    return audio, sr


def trim_silence(audio: np.ndarray, sr: int, margin_s: float = 0.12) -> np.ndarray:
    """Cuts espeak-ng's leading/trailing silence down to `margin_s` so clips stay short."""
    loud = np.flatnonzero(np.abs(audio) > 0.01 * max(float(np.abs(audio).max()), 1e-6))
    if loud.size == 0:
        return audio
    margin = int(margin_s * sr)
    return audio[max(loud[0] - margin, 0) : loud[-1] + margin]


def make_corpus(out: str, seed: int = 0, languages: list[str] | None = None) -> dict[str, float]:
    """Writes the corpus under `out` (replacing it); returns seconds of audio per locale."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    seconds: dict[str, float] = {}
    for locale in languages or list(SENTENCES):
        # Seeded per language, so one language regenerates alone (and tests can check it does).
        rng = np.random.default_rng([seed, zlib.crc32(locale.encode())])
        sentences = SENTENCES[locale]
        clip_dir = os.path.join(out, locale, "clips")
        os.makedirs(clip_dir)
        durations = []
        n = 0
        seconds[locale] = 0.0
        for split, start, stop in SPLITS:
            rows = []
            for sentence in sentences[start:stop]:
                variants = rng.choice(len(VARIANTS), size=REPEATS, replace=False)
                for v in variants:
                    voice = f"{ESPEAK_VOICES[locale]}+{VARIANTS[v]}"
                    speed = int(rng.integers(130, 190))  # words per minute
                    pitch = int(rng.integers(25, 80))  # espeak's 0..99 scale
                    audio, sr = synthesize(sentence, voice, speed, pitch)
                    audio = trim_silence(audio, sr)
                    audio = soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ")
                    # Varied recording level; peak stays below 1 so MP3 never clips.
                    audio = audio * (rng.uniform(0.3, 0.9) / max(np.abs(audio).max(), 1e-6))
                    name = f"common_voice_{locale}_{n:05d}.mp3"
                    n += 1
                    sf.write(
                        os.path.join(clip_dir, name),
                        audio.astype(np.float32),
                        SAMPLE_RATE,
                        format="MP3",
                        bitrate_mode="AVERAGE",
                        compression_level=0.95,  # ~17 kbit/s: speech stays clear, corpus small
                    )
                    ms = round(1000 * len(audio) / SAMPLE_RATE)
                    durations.append((name, ms))
                    seconds[locale] += len(audio) / SAMPLE_RATE
                    client = hashlib.sha1(f"{voice}/{speed}/{pitch}".encode()).hexdigest()
                    rows.append(
                        {
                            "client_id": client,
                            "path": name,
                            "sentence": sentence,
                            "up_votes": 2,
                            "down_votes": 0,
                            "age": "",
                            "gender": "",
                            "accents": "",
                            "variant": "",
                            "locale": locale,
                            "segment": "",
                        }
                    )
            with open(os.path.join(out, locale, f"{split}.tsv"), "w", newline="") as f:
                writer = csv.DictWriter(
                    f,
                    TSV_COLUMNS,
                    delimiter="\t",
                    quoting=csv.QUOTE_NONE,
                    lineterminator="\n",
                )
                writer.writeheader()
                writer.writerows(rows)
        with open(os.path.join(out, locale, "clip_durations.tsv"), "w") as f:
            f.write("clip\tduration[ms]\n")
            for name, ms in durations:
                f.write(f"{name}\t{ms}\n")
    return seconds


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: regenerates the corpus and prints seconds per locale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_corpus"),
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--languages", nargs="*", default=None, help="locales (default: all)")
    args = parser.parse_args(argv)
    seconds = make_corpus(args.out, args.seed, args.languages)
    from data_pipelines import covost

    covost.write_demo_translation_files(args.out)  # CoVoST-2 layout + target tokenizer
    for locale, s in seconds.items():
        print(f"{locale}: {s:.1f} s")
    print(f"total: {sum(seconds.values()) / 60:.1f} min in {args.out}")


if __name__ == "__main__":
    main()
