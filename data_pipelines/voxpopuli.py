"""VoxPopuli (Wang et al., 2021) transcribed speech: European Parliament recordings, 16 languages.

Distributed layout, as `python -m voxpopuli.get_asr_data --root ROOT --lang LANG` of
github.com/facebookresearch/voxpopuli writes it:

    ROOT/transcribed_data/<lang>/asr_train.tsv, asr_dev.tsv, asr_test.tsv
    ROOT/transcribed_data/<lang>/<year>/<id>.ogg          (year = the first 4 characters of id)

Each tsv has a header line and the columns `id  raw_text  normalized_text  speaker_id  split
gender` (newer releases add `is_gold_transcript  accent`). The transcript is `normalized_text`
(lower case, numbers spelled out: what the XLS-R paper trains and scores on) unless the source
says `"text_column": "raw_text"`. Lengths come from the ogg headers.

Source config: `{"type": "voxpopuli", "path": ROOT | ROOT/transcribed_data | one language folder,
"languages": [...] (empty = every language folder), "text_column": "normalized_text",
"splits": {pipeline split: corpus split}}`; the tsv read is `asr_<corpus split>.tsv`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping

from data_pipelines import sources

TEXT_COLUMN = "normalized_text"
REQUIRED_COLUMNS = ("id",)


def language_dirs(path: str, keep: list[str]) -> list[tuple[str, str]]:
    """(code, folder) of the language folders under `path` (see the module docstring).

    Raises:
      sources.CorpusLayoutError: no language folder (one holding asr_*.tsv) found, or a kept
        language missing.
    """
    if os.path.isdir(os.path.join(path, "transcribed_data")):
        path = os.path.join(path, "transcribed_data")
    if not os.path.isdir(path):
        raise sources.CorpusLayoutError(f"VoxPopuli folder {path} not found")

    def is_language(d):
        return any(f.startswith("asr_") and f.endswith(".tsv") for f in os.listdir(d))

    if is_language(path):
        return [(os.path.basename(os.path.normpath(path)), path)]
    found = sorted(
        (d, os.path.join(path, d))
        for d in os.listdir(path)
        if os.path.isdir(os.path.join(path, d)) and is_language(os.path.join(path, d))
    )
    if keep:
        missing = [code for code in keep if code not in {d for d, _ in found}]
        if missing:
            raise sources.CorpusLayoutError(f"VoxPopuli: no folder with asr_*.tsv for languages {missing} under {path}")
        found = [(d, p) for d, p in found if d in set(keep)]
    if not found:
        raise sources.CorpusLayoutError(f"VoxPopuli: no language folder (<lang>/asr_<split>.tsv) under {path}")
    return found


def read_split_tsv(tsv: str, text_column: str) -> list[tuple[str, str]]:
    """(id, transcript) of every row of one `asr_<split>.tsv`.

    Raises:
      sources.CorpusLayoutError: the file is missing, or lacks the `id` or text column.
    """
    if not os.path.exists(tsv):
        raise sources.CorpusLayoutError(f"VoxPopuli split file {tsv} not found")
    try:
        with open(tsv, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            header = reader.fieldnames or []
            missing = [c for c in (*REQUIRED_COLUMNS, text_column) if c not in header]
            if missing:
                raise sources.CorpusLayoutError(f"{tsv}: missing column(s) {missing} (header: {header})")
            rows = []
            for n, row in enumerate(reader, 2):
                if not row["id"]:
                    raise sources.CorpusLayoutError(f"{tsv}:{n}: row without an id")
                rows.append((row["id"], row[text_column] or ""))
            return rows
    except UnicodeDecodeError as e:
        raise sources.CorpusLayoutError(f"{tsv}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def voxpopuli_source(cfg: Mapping, split: str) -> sources.Source:
    """A VoxPopuli split (one or more languages) as a `Source` with transcripts.

    Raises:
      sources.CorpusLayoutError: layout mistakes (see above); FileNotFoundError listing audio
        files named by a tsv that are missing.
    """
    text_column = cfg.get("text_column") or TEXT_COLUMN
    corpus_split = sources.split_name(cfg, split)
    paths, langs, texts = [], [], []
    for code, folder in language_dirs(cfg["path"], list(cfg.get("languages") or [])):
        tsv = os.path.join(folder, f"asr_{corpus_split}.tsv")
        rows = read_split_tsv(tsv, text_column)
        clip_paths = [os.path.join(folder, utt[:4], utt + ".ogg") for utt, _ in rows]
        sources.check_exist(clip_paths, f"VoxPopuli {tsv}")
        paths += clip_paths
        langs += [code] * len(rows)
        texts += [t for _, t in rows]
    return sources.Source(
        f"voxpopuli:{cfg['path']}:{corpus_split}",
        langs,
        sources.probe_lengths(paths),
        texts,
        paths,
        sources.file_loader(paths),
    )
