"""VoxLingua107 (Valk & Alumäe, 2021): spoken language identification, 107 languages.

Distributed layout (https://bark.phon.ioc.ee/voxlingua107/): one zip per language that unpacks to
a folder named by the language code holding 16 kHz mono wav clips cut from YouTube videos
(`<video>__U__S<n>---<start>-<end>.wav`), and `dev.zip`, which unpacks to `dev/<code>/*.wav` in
the same form (1609 clips of 33 of the languages, checked by two listeners each):

    <path>/ab/*.wav  <path>/af/*.wav  ...  <path>/zh/*.wav      split "train"
    <path>/dev/ab/*.wav  ...                                    split "dev" (the benchmark's eval set)

The language zips may also be unpacked into `<path>/train/` (SpeechBrain's VoxLingua107 recipe
does): "train" reads `<path>/train/` when that folder exists. The label of a clip is its folder
name. Lengths come from the wav headers (the corpus has no index). Source config: `{"type":
"voxlingua107", "path": ROOT, "languages": [...] (empty = every language folder), "splits":
{pipeline split: folder under ROOT, "" = ROOT itself}}`; any split `s` other than "train" reads
`ROOT/s/<code>/`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from data_pipelines import sources

# The 107 language codes of VoxLingua107, in the corpus's (alphabetical) order: the classifier's
# label order in configs/finetune/voxlingua107.py. Codes as the corpus spells them (YouTube's:
# "iw" Hebrew, "jw" Javanese).
VOXLINGUA107_LANGUAGES = (
    "ab af am ar as az ba be bg bn bo br bs ca ceb cs cy da de el en eo es et eu fa fi fo fr gl "
    "gn gu gv ha haw hi hr ht hu hy ia id is it iw ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk "
    "ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa sco sd si sk sl sn so sq sr su sv sw ta "
    "te tg th tk tl tr tt uk ur uz vi war yi yo zh"
).split()
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")
_SPLIT_NAMES = {"dev", "test", "train"}  # folders under the root that are not languages


def split_dir(cfg: Mapping, split: str) -> str:
    """The folder holding the language folders of `split` (see the module docstring)."""
    default = split
    if split == "train" and not os.path.isdir(os.path.join(cfg["path"], "train")):
        default = ""  # the language folders sit directly under the root
    folder = dict(cfg.get("splits") or {}).get(split, default)
    return os.path.join(cfg["path"], folder) if folder else cfg["path"]


def language_dirs(root: str, keep: list[str], split: str) -> list[tuple[str, str]]:
    """(code, folder) of every language folder under `root` (sorted), or of `keep` only.

    Raises:
      sources.CorpusLayoutError: `root` is missing, a kept language has no folder, or none is found.
    """
    if not os.path.isdir(root):
        raise sources.CorpusLayoutError(f"VoxLingua107 {split} folder {root} not found")
    # dev/ (unpacked dev.zip) sits next to the language folders of the train root.
    found = sorted(
        (d, os.path.join(root, d))
        for d in os.listdir(root)
        if os.path.isdir(os.path.join(root, d)) and d not in _SPLIT_NAMES
    )
    if keep:
        have = {d for d, _ in found}
        missing = [code for code in keep if code not in have]
        if missing:
            raise sources.CorpusLayoutError(f"VoxLingua107 {split}: no folder for languages {missing} under {root}")
        found = [(d, p) for d, p in found if d in set(keep)]
    if not found:
        raise sources.CorpusLayoutError(f"VoxLingua107 {split}: no language folders under {root}")
    return found


def voxlingua107_source(cfg: Mapping, split: str) -> sources.Source:
    """A VoxLingua107 split as a `Source` with language labels and no transcripts.

    Raises:
      sources.CorpusLayoutError: a language folder without audio files (named), or a missing folder.
    """
    root = split_dir(cfg, split)
    paths, langs = [], []
    for code, folder in language_dirs(root, list(cfg.get("languages") or []), split):
        clips = sorted(f for f in os.listdir(folder) if f.lower().endswith(AUDIO_EXTENSIONS))
        if not clips:
            raise sources.CorpusLayoutError(f"VoxLingua107 language folder {folder} holds no audio files")
        paths += [os.path.join(folder, f) for f in clips]
        langs += [code] * len(clips)
    return sources.Source(
        f"voxlingua107:{root}",
        langs,
        sources.probe_lengths(paths),  # unreadable headers -> -1: dropped at planning, counted
        None,
        paths,
        sources.file_loader(paths),
    )
