"""CoVoST-2 speech translation (Wang et al. 2020): Common Voice clips with translations.

CoVoST-2 ships only text: `covost_v2.<src>_<tgt>.<split>.tsv` with columns `path` (a Common
Voice clip name), `sentence` (the transcript), `translation` and `client_id`; the audio comes from
a Common Voice release (CoVoST-2 used Common Voice 4). Splits are train, dev, test.

Source config (a dict in `data.sources`):
  type: "covost"
  path: folder with the covost_v2.*.tsv files
  clips: the Common Voice release folder (`<locale>/clips/`) or one `clips/` folder
  pairs: language pairs to read, e.g. ["es_en", "ru_en"] (empty = every pair in `path`)

`covost_source` reads it (`sources.READERS["covost"]`): the `Source` has the translations as its
transcripts, the source locale as its language, and two extra columns: `target_languages`
(locale per utterance) and `source_texts`. Rows without a translation are counted and skipped;
missing clips fail at start, listed (as Common Voice).
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import re
from collections.abc import Mapping

from data_pipelines import sources
from data_pipelines.demo_sentences import SENTENCES, TRANSLATIONS_EN
from data_pipelines.source import Source
from xlsr_jax.constants import SAMPLE_RATE

logger = logging.getLogger(__name__)

TSV_PATTERN = "covost_v2.{pair}.{split}.tsv"
_TSV_RE = re.compile(r"covost_v2\.(?P<src>[^._]+)_(?P<tgt>[^._]+)\.(?P<split>[a-z]+)\.tsv$")
COLUMNS = ("path", "sentence", "translation", "client_id")


def find_pairs(path: str, split: str, wanted) -> list[tuple[str, str, str]]:
    """(src, tgt, tsv path) for each requested pair present for `split`."""
    found = {}
    for tsv in sorted(glob.glob(os.path.join(path, f"covost_v2.*.{split}.tsv"))):
        m = _TSV_RE.search(os.path.basename(tsv))
        if m:
            found[f"{m['src']}_{m['tgt']}"] = (m["src"], m["tgt"], tsv)
    if wanted:
        missing = [p for p in wanted if p not in found]
        if missing:
            names = ", ".join(TSV_PATTERN.format(pair=p, split=split) for p in missing)
            raise FileNotFoundError(f"CoVoST-2 files not found under {path}: {names}")
        return [found[p] for p in wanted]
    if not found:
        raise FileNotFoundError(f"no CoVoST-2 files ({TSV_PATTERN.format(pair='<src>_<tgt>', split=split)}) in {path}")
    return list(found.values())


def clips_dir(root: str, locale: str) -> str:
    """The folder of `locale`'s clips: `<root>/<locale>/clips`, `<root>/clips` or `root` itself."""
    for candidate in (os.path.join(root, locale, "clips"), os.path.join(root, "clips"), root):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f"no Common Voice clips folder for {locale!r} under {root}")


def read_tsv(tsv: str) -> list[dict[str, str]]:
    """Rows of a CoVoST-2 tsv (no quoting, as fairseq's prep script reads it).

    Raises:
      ValueError naming the file and the missing columns.
    """
    with open(tsv, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in COLUMNS[:3] if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{tsv}: missing column(s) {missing}; expected {list(COLUMNS)}")
        return list(reader)


def covost_source(cfg: Mapping, split: str) -> Source:
    """The `Source` of one split over the configured language pairs (see the module docstring):
    translations as transcripts, the source locale as language, plus `target_languages` and
    `source_texts`. Rows without a translation are counted (logged) and skipped."""
    paths, lengths, langs, targets, target_langs, texts = [], [], [], [], [], []
    for src, tgt, tsv in find_pairs(cfg["path"], sources.split_name(cfg, split), list(cfg.get("pairs") or [])):
        clips = clips_dir(cfg.get("clips") or cfg["path"], src)
        rows = read_tsv(tsv)
        kept = [r for r in rows if (r.get("translation") or "").strip()]
        if len(kept) < len(rows):
            logger.warning("%s: %d of %d rows have no translation, skipped", tsv, len(rows) - len(kept), len(rows))
        clip_paths = [os.path.join(clips, r["path"]) for r in kept]
        sources.check_exist(clip_paths, f"CoVoST-2 {tsv}")
        durations = clip_durations(os.path.dirname(clips))
        if all(r["path"] in durations for r in kept):
            lengths += [durations[r["path"]] * SAMPLE_RATE // 1000 for r in kept]
        else:
            lengths += list(sources.probe_lengths(clip_paths))
        paths += clip_paths
        langs += [src] * len(kept)
        target_langs += [tgt] * len(kept)
        targets += [r["translation"] for r in kept]
        texts += [r.get("sentence") or "" for r in kept]
    source = Source(f"covost:{cfg['path']}:{split}", langs, lengths, targets, paths, sources.file_loader(paths))
    source.target_languages = target_langs
    source.source_texts = texts
    return source


def clip_durations(locale_dir: str) -> dict[str, int]:
    """Common Voice's clip_durations.tsv (clip -> milliseconds), when the release has it."""
    path = os.path.join(locale_dir, "clip_durations.tsv")
    out: dict[str, int] = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            next(f)
            for line in f:
                clip, ms = line.rstrip("\n").split("\t")
                out[clip] = int(ms)
    return out


def write_demo_covost(corpus_dir: str, out_dir: str, target: str = "en") -> list[str]:
    """CoVoST-2 tsv files for the shipped demo corpus (a Common Voice layout), from the
    English translations written for its sentences (`demo_sentences.TRANSLATIONS_EN`).

    Writes `covost_v2.<locale>_en.<split>.tsv` for every locale and split of `corpus_dir`;
    returns their paths. Raises ValueError for a sentence that has no translation.
    """
    if target != "en":
        raise ValueError(f"the demo corpus has English translations only, not {target!r}")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for locale in sorted(SENTENCES):
        table = dict(zip(SENTENCES[locale], TRANSLATIONS_EN[locale]))
        for split in ("train", "dev", "test"):
            cv_tsv = os.path.join(corpus_dir, locale, f"{split}.tsv")
            if not os.path.exists(cv_tsv):
                continue
            with open(cv_tsv, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
            out = os.path.join(out_dir, TSV_PATTERN.format(pair=f"{locale}_{target}", split=split))
            with open(out, "w", encoding="utf-8") as f:
                f.write("\t".join(COLUMNS) + "\n")
                for r in rows:
                    if r["sentence"] not in table:
                        raise ValueError(f"{cv_tsv}: no English translation for {r['sentence']!r}")
                    f.write("\t".join((r["path"], r["sentence"], table[r["sentence"]], r["client_id"])) + "\n")
            written.append(out)
    return written


DEMO_SUBDIR = "covost"  # <demo corpus>/covost/: the CoVoST-2 files of the demo corpus
DEMO_TOKENIZER = "sentencepiece.bpe.model"
DEMO_TOKENIZER_PIECES = 200  # pieces of the demo's target sentencepiece model (its vocabulary: + 54)


def write_demo_translation_files(corpus_dir: str) -> list[str]:
    """The demo corpus's translation files: CoVoST-2 tsvs (`write_demo_covost`) and a small
    target sentencepiece model trained on the English translations, under `<corpus>/covost/`.
    `make_demo_corpus.py` calls this after synthesising the audio; the files are shipped."""
    from data_pipelines import translation

    out = os.path.join(corpus_dir, DEMO_SUBDIR)
    written = write_demo_covost(corpus_dir, out)
    sentences = [t for locale in sorted(TRANSLATIONS_EN) for t in TRANSLATIONS_EN[locale]]
    model = translation.train_sentencepiece(sentences, DEMO_TOKENIZER_PIECES)
    with open(os.path.join(out, DEMO_TOKENIZER), "wb") as f:
        f.write(model)
    return [*written, os.path.join(out, DEMO_TOKENIZER)]
