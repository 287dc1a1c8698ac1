"""xlsr-jax input pipeline: multilingual speech corpora -> static-shape numpy batches.

    import data_pipelines
    cfg = data_pipelines.default_config()          # the `data` config section (every field commented)
    cfg = data_pipelines.demo_corpus_config("ctc") # or: the shipped 8-language demo corpus
    pipe = data_pipelines.build_input(cfg, split="train", task="pretrain" | "ctc" | "lid",
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count())
    batch = next(pipe)   # dict of numpy arrays, B = batch_size // process_count, always full:
        # "audio"         float32 [B, S]  (zero-mean unit-var per utterance if cfg.normalize)
        # "padding_mask"  bool    [B, S]  True = padding (fairseq convention)
        # "language"      int32   [B]     index into pipe.languages
        # "valid"         bool    [B]     False for filler rows (end of an eval pass) and for rows
        #                                 that replace an undecodable file (copies of good rows)
        # task "ctc" adds:
        # "labels"        int32   [B, L]  pipe.vocabulary ids, 0 (blank/<pad>) beyond the text
        # "label_padding" bool    [B, L]  True = padding
        # S and L come from the static set pipe.shapes (one per length bucket; same on all hosts).
    state = pipe.get_state()   # small JSON dict: save it with the checkpoint
    pipe.set_state(state)      # a new pipe (same config) continues exactly after that batch
    pipe.languages             # language codes; index = "language" id
    pipe.vocabulary            # ctc: text.Vocabulary (blank 0, "|" word delimiter, HF vocab.json)
    pipe.stats                 # skipped utterances by reason, with example paths (also logged)
    pipe.probabilities         # language sampling probabilities (logged at start with hours)
    pipe.num_batches           # eval: batches in one pass (split != "train"); train: None

    data_pipelines.load_audio(path_or_bytes, sampling_rate=16000)  # float32 [S], mono, resampled

The training split is an endless stream with languages sampled ∝ hours^alpha; other splits are one
ordered pass (StopIteration at the end; `build_input(..., repeat=True)` makes any split endless).
Sources (`cfg.sources`, a list of dicts or a {name: dict} mapping): fairseq manifests, Common
Voice, MLS, the papers' other benchmarks as distributed (VoxLingua107, VoxPopuli, BABEL: modules
`voxlingua`, `voxpopuli`, `babel`), TFRecord shards (`tfrecord_writer.write_tfrecords`), TFDS
datasets (`tfds_builder.prepare` builds one from local corpora). No shuffle buffer: sources are
random access, so shuffling is an exact per-epoch permutation and the position is a few integers.
Design, the shipped corpus and measured throughput: README.md here. Regenerate the corpus:
`python -m data_pipelines.make_demo_corpus`.
"""

from data_pipelines.audio import AudioDecodeError, load_audio, normalize, resample
from data_pipelines.config import (
    DEMO_CORPUS_DIR,
    DEMO_LANGUAGES,
    default_config,
    demo_corpus_config,
)
from data_pipelines.pipeline import (
    TASKS,
    InputPipeline,
    VocabularyMismatchError,
    build_input,
    build_target_tokenizer,
    build_vocabulary,
)
from data_pipelines.text import Vocabulary, normalize_text

__all__ = [
    "DEMO_CORPUS_DIR",
    "DEMO_LANGUAGES",
    "TASKS",
    "AudioDecodeError",
    "InputPipeline",
    "Vocabulary",
    "VocabularyMismatchError",
    "build_input",
    "build_target_tokenizer",
    "build_vocabulary",
    "default_config",
    "demo_corpus_config",
    "load_audio",
    "normalize",
    "normalize_text",
    "resample",
]
