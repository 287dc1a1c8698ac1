"""The `data` section of a training config, and the shipped demo corpus's config."""

from __future__ import annotations

import os

import ml_collections

from xlsr_jax.constants import SAMPLE_RATE

DEMO_CORPUS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_corpus")
DEMO_LANGUAGES = ("ar", "es", "hi", "ky", "ru", "sw", "tr", "zh-CN")


def default_config() -> ml_collections.ConfigDict:
    """Input config with XLS-R pretraining defaults (fairseq `xlsr` recipe: 16 kHz, crops of at
    most 320000 samples = 20 s, at least 32000 = 2 s, languages sampled with alpha = 0.5).
    Points at the shipped demo corpus until `sources` is replaced."""
    c = ml_collections.ConfigDict()
    # Corpora to read, mixed. Each: type (manifest | common_voice | mls | voxlingua107 |
    # voxpopuli | babel | tfrecord | tfds), path, splits ({pipeline split: corpus split}),
    # languages (common_voice, voxlingua107, voxpopuli: folders to keep; empty = all), language
    # (code for corpora that do not say), text_column (voxpopuli), name/audio_key/text_key/
    # language_key (tfds only). See data_pipelines/sources.py. A mapping {name: source dict} works
    # too (it can be frozen and overridden from the command line: --config.data.sources.cv.path=...).
    c.sources = [
        {
            "type": "common_voice",
            "path": DEMO_CORPUS_DIR,
            "splits": {},
            "languages": [],
            "language": "",
        }
    ]
    # Language codes in id order (the "language" field of a batch); empty = every language in the
    # sources' train split, sorted. Utterances of other languages are dropped (counted).
    c.languages = []
    # Language sampling exponent: p_l ∝ hours_l^alpha (XLS-R / XLSR: 0.5; 1 = natural; 0 = uniform).
    c.sampling_alpha = 0.5
    # Same exponent across corpora of one language (XLS-R samples datasets this way too).
    c.corpus_alpha = 0.5
    # Hz; audio is resampled to this rate (must be the models' SAMPLE_RATE, 16 kHz).
    c.sampling_rate = SAMPLE_RATE
    # Zero-mean unit-variance per utterance: True for the layer-norm extractor (XLSR, XLS-R),
    # False for the group-norm base model (fairseq `normalize`).
    c.normalize = True
    # Utterances shorter than this (samples) are dropped and counted (fairseq min_sample_size).
    c.min_sample_size = 32000
    # Longer utterances are randomly cropped to this (pretrain/lid) or dropped (ctc).
    c.max_sample_size = 320000
    # fairseq pretraining: crop every utterance of a batch to the batch's shortest (here: down to
    # its bucket's lower boundary) so no sample is padding. Ignored for ctc (labels need whole audio).
    c.crop_to_batch_min = False
    # Padded lengths in samples (ascending); empty = `num_buckets` geometric steps from
    # min_sample_size to max_sample_size. Each is one compiled shape.
    c.bucket_boundaries = []
    c.num_buckets = 8
    # Buckets are multiples of this (the conv feature encoder's total stride).
    c.pad_multiple = 320
    # Global batch size (all hosts); each host gets batch_size // process_count rows.
    c.batch_size = 32
    # Memory cap: buckets with batch_size * S above this are removed (0 = no cap), which lowers
    # the effective max_sample_size.
    c.max_samples_per_batch = 0
    # CTC label padding: a bucket of S samples holds labels up to ceil(S / this) tokens (640 = 25
    # tokens per second, above speech's ~15 characters/s; below CTC's limit of 50 frames/s).
    c.samples_per_label = 640
    # Seed of the whole stream (language draws, epoch permutations, crops).
    c.seed = 0
    # Batches decoded ahead of the consumer.
    c.prefetch = 2
    # Parallel decode calls in tf.data's map (-1 = AUTOTUNE, bounded by num_threads).
    c.num_parallel_calls = -1
    # Size of the pipeline's private tf.data thread pool (keep <= host cores).
    c.num_threads = max(1, min(8, os.cpu_count() or 1))
    c.vocabulary = ml_collections.ConfigDict()
    # HF-style vocab.json to use; empty = built from the train split's transcripts.
    c.vocabulary.path = ""
    # Highest share of the train split's (normalised) label characters that may be `<unk>`; above
    # it the run stops before training (a vocabulary that disagrees with the normaliser, e.g. an
    # upper-case vocab.json with the default lower-casing, would train on <unk> and evaluate
    # against empty references). 0.05: a hub vocabulary typically misses a few rare characters.
    c.vocabulary.max_unk_rate = 0.05
    c.target = ml_collections.ConfigDict()
    # Speech translation (task "st"): the target sentencepiece model (mBART-50's
    # sentencepiece.bpe.model, or a small one from data_pipelines.translation.train_sentencepiece).
    c.target.tokenizer = ""
    # Tokens per target, language token and </s> included; longer targets are cut (and counted).
    c.target.max_length = 64
    # Target language of sources that do not name one per utterance (CoVoST-2 does).
    c.target.language = "en"
    c.text = ml_collections.ConfigDict()
    # Transcript normalisation overrides per language, e.g. {"en": {"keep": "'-"}}; options:
    # fold_typography, apostrophe, nfkc, lowercase, strip_punctuation, keep, word_spaces (see
    # data_pipelines/text.py).
    c.text.per_language = {}
    return c


def demo_corpus_config(task: str = "pretrain", batch_size: int = 8) -> ml_collections.ConfigDict:
    """`default_config()` sized for the shipped corpus (utterances of ~1-4 s): a tiny model
    learns something from it in minutes on CPU.

    Args:
      task: "pretrain" | "ctc" | "lid" | "st" (ctc, lid and st keep whole utterances up to 6 s;
        st reads the corpus as CoVoST-2, X -> English, from its shipped `covost/` files).
      batch_size: global batch size.
    """
    c = default_config()
    if task == "st":
        covost_dir = os.path.join(DEMO_CORPUS_DIR, "covost")  # data_pipelines.covost.DEMO_SUBDIR
        c.sources = [{"type": "covost", "path": covost_dir, "clips": DEMO_CORPUS_DIR, "pairs": []}]
        c.target.tokenizer = os.path.join(covost_dir, "sentencepiece.bpe.model")
        c.target.max_length = 32  # the longest demo translation is 29 tokens
    c.min_sample_size = 8000  # 0.5 s
    c.max_sample_size = 96000 if task != "pretrain" else 48000  # 6 s / 3 s crops
    c.bucket_boundaries = [16000, 24000, 32000, 48000, 64000, 96000]
    c.batch_size = batch_size
    c.prefetch = 2
    return c
