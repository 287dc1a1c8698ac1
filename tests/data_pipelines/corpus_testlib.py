"""Small generated corpora for the data_pipelines tests (written into tmp dirs, seconds to make)."""

from __future__ import annotations

import csv
import os

import numpy as np
import soundfile as sf

WORDS = {
    "aa": ["sol", "mar", "casa", "perro", "agua"],
    "bb": ["кот", "дом", "мир", "лес"],
    "cc": ["ev", "su", "göz", "kış", "ağaç"],
}


def tone(
    seconds: float,
    sr: int,
    freq: float = 440.0,
    channels: int = 1,
    seed: int = 0,
    noise: float = 0.01,
):
    """A tone plus a little noise: float32 [samples] or [samples, channels]."""
    t = np.arange(round(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t) + noise * np.random.default_rng(seed).standard_normal(t.size)
    x = x.astype(np.float32)
    if channels > 1:
        x = np.stack([x * (1 - 0.1 * c) for c in range(channels)], axis=1)
    return x


def write_common_voice(
    root: str,
    per_lang: dict[str, int],
    split: str = "train",
    seconds=(0.6, 2.4),
    ext: str = "wav",
    durations: bool = True,
    seed: int = 0,
):
    """Common Voice layout with `per_lang[locale]` clips of random length; returns {path: secs}."""
    rng = np.random.default_rng(seed)
    out = {}
    for locale, n in per_lang.items():
        clips = os.path.join(root, locale, "clips")
        os.makedirs(clips, exist_ok=True)
        rows, durs = [], []
        for i in range(n):
            secs = float(rng.uniform(*seconds))
            name = f"{split}_{locale}_{i}.{ext}"
            sf.write(
                os.path.join(clips, name),
                tone(secs, 16000, 200 + 10 * i, seed=i),
                16000,
            )
            words = WORDS.get(locale, ["x"])
            sentence = " ".join(rng.choice(words, size=2)).capitalize() + "."
            rows.append({"client_id": "c", "path": name, "sentence": sentence, "locale": locale})
            durs.append((name, int(secs * 1000)))
            out[os.path.join(clips, name)] = secs
        with open(os.path.join(root, locale, f"{split}.tsv"), "w", newline="") as f:
            w = csv.DictWriter(
                f,
                ["client_id", "path", "sentence", "locale"],
                delimiter="\t",
                lineterminator="\n",
            )
            w.writeheader()
            w.writerows(rows)
        if durations:
            dfile = os.path.join(root, locale, "clip_durations.tsv")
            mode = "a" if os.path.exists(dfile) else "w"
            with open(dfile, mode) as f:
                if mode == "w":
                    f.write("clip\tduration[ms]\n")
                f.writelines(f"{a}\t{b}\n" for a, b in durs)
    return out
