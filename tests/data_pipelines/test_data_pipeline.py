"""build_input: shapes, sampling proportions, resume, process sharding, bad files, labels."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
from corpus_testlib import WORDS, tone, write_common_voice

import data_pipelines
from data_pipelines import sampling, text

BOUNDS = [8000, 16000, 24000, 32000]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cv"))
    train = write_common_voice(root, {"aa": 10, "bb": 20, "cc": 30}, "train", seed=1)
    dev = write_common_voice(root, {"aa": 5, "bb": 6, "cc": 4}, "dev", seed=2)
    return root, train, dev


def make_cfg(root, **kw):
    cfg = data_pipelines.default_config()
    cfg.sources = [
        {
            "type": "common_voice",
            "path": root,
            "splits": {},
            "languages": [],
            "language": "",
        }
    ]
    cfg.min_sample_size = 4000
    cfg.max_sample_size = 32000
    cfg.bucket_boundaries = BOUNDS
    cfg.batch_size = 8
    cfg.num_threads = 2
    cfg.update(kw)
    return cfg


def take(pipe, n):
    return [next(pipe) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_batch_shapes_padding_and_static_set(corpus):
    root, _, _ = corpus
    pipe = data_pipelines.build_input(make_cfg(root), "train", "pretrain")
    assert pipe.languages == ["aa", "bb", "cc"]
    assert pipe.shapes == [(s, 0) for s in BOUNDS]
    seen = set()
    for batch in take(pipe, 12):
        audio, pad = batch["audio"], batch["padding_mask"]
        assert audio.dtype == np.float32 and pad.dtype == bool
        assert audio.shape[0] == 8 and audio.shape == pad.shape
        assert audio.shape[1] in BOUNDS
        seen.add(audio.shape[1])
        n = (~pad).sum(1)
        # Padding is a suffix, is zero, and the bucket is the smallest that holds the utterance.
        np.testing.assert_array_equal(pad, np.arange(audio.shape[1])[None] >= n[:, None])
        assert np.all(audio[pad] == 0)
        lower = BOUNDS[BOUNDS.index(audio.shape[1]) - 1] if audio.shape[1] > BOUNDS[0] else 0
        assert np.all(n > lower - 400)  # lengths from metadata are ms-rounded
        # normalize=True: zero mean, unit variance over each utterance's samples
        for row, k in zip(audio, n):
            assert abs(row[:k].std() - 1) < 0.05
        assert batch["language"].dtype == np.int32 and batch["valid"].all()
    assert len(seen) >= 2


def test_crop_to_batch_min_gives_no_padding(corpus):
    root, _, _ = corpus
    cfg = make_cfg(root, crop_to_batch_min=True, min_sample_size=8000)
    pipe = data_pipelines.build_input(cfg, "train", "pretrain")
    for batch in take(pipe, 8):
        assert not batch["padding_mask"].any()
        assert batch["audio"].shape[1] in BOUNDS


def test_max_samples_per_batch_caps_shapes(corpus):
    root, _, _ = corpus
    cfg = make_cfg(root, max_samples_per_batch=8 * 16000)
    pipe = data_pipelines.build_input(cfg, "train", "pretrain")
    assert [s for s, _ in pipe.shapes] == [8000, 16000]
    assert all(b["audio"].shape == (8, 8000) or b["audio"].shape == (8, 16000) for b in take(pipe, 4))


def _synthetic_plan(hours_by_group, batch_size=16, seed=0):
    """Plan with groups given as (language id, source id, hours, utterances); 2 buckets."""
    refs, lengths, langs, buckets = [], [], [], []
    for lang, src, hours, n in hours_by_group:
        per = int(hours * 3600 * 16000 / n)
        for i in range(n):
            refs.append((src, i))
            lengths.append(per)
            langs.append(lang)
            buckets.append(i % 2)
    return sampling.Plan(
        np.array(refs),
        np.array(lengths),
        np.array(langs, np.int32),
        np.array(buckets, np.int32),
        [16000, 32000],
        [0, 0],
        batch_size,
        seed,
    )


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_language_sampling_proportions(alpha):
    hours = {"x": 1.0, "y": 4.0, "z": 16.0}
    probs = sampling.language_probabilities(hours, alpha)
    expected = np.array([hours[k] ** alpha for k in "xyz"])
    expected /= expected.sum()
    np.testing.assert_allclose([probs[k] for k in "xyz"], expected)
    plan = _synthetic_plan([(0, 0, 1.0, 7), (1, 0, 4.0, 11), (2, 0, 16.0, 13)])
    planner = sampling.TrainPlanner(plan, np.array([probs[k] for k in "xyz"]), 0.5, 1)
    counts = np.zeros(3)
    for _ in range(600):  # 9600 utterances in emitted batches
        batch = planner.next_batch()
        counts += np.bincount(plan.langs[batch["rows"]], minlength=3)
    n = counts.sum()
    sigma = np.sqrt(n * expected * (1 - expected))
    assert np.all(np.abs(counts - n * expected) < 5 * sigma), (counts / n, expected)


def test_corpus_sampling_within_a_language():
    # One language in two corpora with 1 h and 9 h: corpus_alpha 0.5 -> 1:3.
    plan = _synthetic_plan([(0, 0, 1.0, 5), (0, 1, 9.0, 17)])
    planner = sampling.TrainPlanner(plan, np.array([1.0]), 0.5, 2)
    src = np.concatenate([plan.refs[planner.next_batch()["rows"], 0] for _ in range(500)])
    frac = src.mean()
    sigma = np.sqrt(0.75 * 0.25 / src.size)
    assert abs(frac - 0.75) < 5 * sigma


def test_epoch_permutation_visits_every_utterance():
    plan = _synthetic_plan([(0, 0, 1.0, 40)], batch_size=8)
    planner = sampling.TrainPlanner(plan, np.array([1.0]), 0.5, 1)
    rows = [planner.draw()[1] for _ in range(40)]
    assert sorted(rows) == list(range(40))  # one epoch = a permutation


def test_pipeline_logs_hours_and_probabilities(corpus, caplog):
    root, train, _ = corpus
    caplog.set_level("INFO")
    pipe = data_pipelines.build_input(make_cfg(root), "train", "pretrain")
    hours = {lang: sum(s for p, s in train.items() if f"/{lang}/" in p) / 3600 for lang in ("aa", "bb", "cc")}
    for lang, h in hours.items():
        assert abs(pipe.hours[lang] - h) < 1e-3
    exp = sampling.language_probabilities(pipe.hours, 0.5)
    assert pipe.probabilities == pytest.approx(exp)
    assert "sampling p=" in caplog.text and "language cc" in caplog.text


def test_exact_resume_train(corpus):
    root, _, _ = corpus
    cfg = make_cfg(root, seed=3)
    pipe = data_pipelines.build_input(cfg, "train", "ctc")
    take(pipe, 3)
    state = json.loads(json.dumps(pipe.get_state()))  # must survive JSON
    assert len(json.dumps(state)) < 4000
    expected = take(pipe, 5)
    fresh = data_pipelines.build_input(cfg, "train", "ctc")
    fresh.set_state(state)
    assert_batches_equal(take(fresh, 5), expected)
    # the restored pipe keeps advancing its own state identically
    assert fresh.get_state() == pipe.get_state()
    # rewinding a running pipe (its old stream still prefetching) replays the same batches
    pipe.set_state(state)
    assert_batches_equal(take(pipe, 5), expected)


def test_same_seed_same_stream_other_seed_differs(corpus):
    root, _, _ = corpus
    a = take(data_pipelines.build_input(make_cfg(root), "train", "pretrain"), 3)
    b = take(data_pipelines.build_input(make_cfg(root), "train", "pretrain"), 3)
    c = take(data_pipelines.build_input(make_cfg(root, seed=9), "train", "pretrain"), 3)
    assert_batches_equal(a, b)
    assert any(x["audio"].shape != y["audio"].shape or not np.array_equal(x["audio"], y["audio"]) for x, y in zip(a, c))


def test_state_from_other_config_is_rejected(corpus):
    root, _, _ = corpus
    state = data_pipelines.build_input(make_cfg(root), "train", "pretrain").get_state()
    other = data_pipelines.build_input(make_cfg(root, batch_size=16), "train", "pretrain")
    with pytest.raises(ValueError, match="different data config"):
        other.set_state(state)


@pytest.mark.parametrize("split", ["train", "dev"])
def test_process_sharding_disjoint_and_complete(corpus, split):
    root, _, _ = corpus
    cfg = make_cfg(root, seed=5)
    n = 4 if split == "train" else None
    whole = data_pipelines.build_input(cfg, split, "lid")
    whole_batches = take(whole, n) if n else list(whole)
    parts = [data_pipelines.build_input(cfg, split, "lid", process_index=p, process_count=2) for p in range(2)]
    part_batches = [take(p, n) if n else list(p) for p in parts]
    assert len(part_batches[0]) == len(part_batches[1]) == len(whole_batches)
    # The saved position is global: any host's state resumes any host (or another host count).
    assert parts[0].get_state() == parts[1].get_state() == whole.get_state()
    for g, b0, b1 in zip(whole_batches, *part_batches):
        assert b0["audio"].shape == b1["audio"].shape  # equal local shapes on every host
        for k in g:
            np.testing.assert_array_equal(np.concatenate([b0[k], b1[k]]), g[k], err_msg=k)
    with pytest.raises(ValueError, match="divisible"):
        data_pipelines.build_input(cfg, split, "lid", process_index=0, process_count=3)


def test_eval_pass_visits_each_utterance_once(corpus):
    root, _, dev = corpus
    pipe = data_pipelines.build_input(make_cfg(root), "dev", "ctc")
    batches = list(pipe)
    assert len(batches) == pipe.num_batches
    # ctc keeps whole utterances: longer than max_sample_size are dropped, counted
    kept = sum(int(secs * 1000) * 16 <= 32000 for secs in dev.values())
    assert 0 < kept < len(dev)
    assert sum(int(b["valid"].sum()) for b in batches) == kept
    assert pipe.stats["counts"] == {"too_long": len(dev) - kept}
    with pytest.raises(StopIteration):
        next(pipe)
    # resume in the middle of the pass
    again = data_pipelines.build_input(make_cfg(root), "dev", "ctc")
    next(again)
    state = again.get_state()
    rest = data_pipelines.build_input(make_cfg(root), "dev", "ctc")
    rest.set_state(state)
    assert_batches_equal(list(rest), batches[1:])


def test_ctc_labels_and_language_ids(corpus):
    root, _, _ = corpus
    pipe = data_pipelines.build_input(make_cfg(root), "dev", "ctc")
    vocab = pipe.vocabulary
    assert vocab.blank_id == 0 and vocab.tokens[4] == "|"
    for batch in pipe:
        L = batch["labels"].shape[1]
        assert (batch["audio"].shape[1], L) in pipe.shapes
        assert batch["labels"].dtype == np.int32 and batch["label_padding"].dtype == bool
        for labels, lpad, lang, _valid in zip(
            batch["labels"], batch["label_padding"], batch["language"], batch["valid"]
        ):
            k = int((~lpad).sum())
            np.testing.assert_array_equal(lpad, np.arange(L) >= k)
            assert np.all(labels[lpad] == 0) and k > 0
            words = vocab.decode(labels).split()
            code = pipe.languages[lang]
            allowed = {text.normalize_text(w, code) for w in WORDS[code]}
            assert set(words) <= allowed, (words, code)


def test_bad_files_skipped_and_counted(tmp_path):
    root = str(tmp_path)
    write_common_voice(root, {"aa": 6}, "dev", seconds=(1.0, 1.5))
    clips = os.path.join(root, "aa", "clips")
    # Corrupt bytes, an empty file, and a file shorter than its metadata claims: all found only
    # when decoded. Plus one file whose metadata says it is too short: dropped at start.
    with open(os.path.join(clips, "corrupt.wav"), "wb") as f:
        f.write(b"RIFF\x00\x00garbage" * 50)
    sf.write(os.path.join(clips, "empty.wav"), np.zeros(0, np.float32), 16000)
    sf.write(os.path.join(clips, "short.wav"), tone(0.1, 16000), 16000)
    sf.write(os.path.join(clips, "tiny.wav"), tone(0.1, 16000), 16000)
    with open(os.path.join(root, "aa", "dev.tsv"), "a") as f:
        f.writelines(f"c\t{name}\tSol.\taa\n" for name in ("corrupt.wav", "empty.wav", "short.wav", "tiny.wav"))
    with open(os.path.join(root, "aa", "clip_durations.tsv"), "a") as f:
        f.write("corrupt.wav\t1200\nempty.wav\t1200\nshort.wav\t1200\ntiny.wav\t100\n")
    cfg = make_cfg(root, languages=["aa"])
    pipe = data_pipelines.build_input(cfg, "dev", "pretrain")
    batches = list(pipe)
    counts = pipe.stats["counts"]
    # Counted by the decoder's cause (data_pipelines.audio.REASONS), not all as "unreadable".
    assert counts == {"damaged": 1, "no_samples": 1, "too_short": 2}, pipe.stats
    assert any("corrupt.wav" in e for e in pipe.stats["examples"]["damaged"])
    assert all(b["audio"].shape[0] == 8 for b in batches)
    assert sum(int(b["valid"].sum()) for b in batches) == 6  # the good clips, once each
    for b in batches:  # substituted rows are copies of good rows, never all padding
        assert not b["padding_mask"].all(axis=1).any()
    # Without clip_durations.tsv the corrupt file fails its header probe: dropped at start.
    os.remove(os.path.join(root, "aa", "clip_durations.tsv"))
    pipe = data_pipelines.build_input(cfg, "dev", "pretrain")
    list(pipe)
    assert pipe.stats["counts"]["unreadable"] == 1
    assert pipe.stats["counts"]["too_short"] >= 2


def test_a_bad_file_is_counted_once_however_often_it_is_drawn(tmp_path):
    # A training split cycles: the corrupt file is drawn (and fails) in every epoch; the count
    # is of files, with the file named in the examples.
    root = str(tmp_path)
    write_common_voice(root, {"aa": 6}, "train", seconds=(1.0, 1.5))
    with open(os.path.join(root, "aa", "clips", "corrupt.wav"), "wb") as f:
        f.write(b"RIFF\x00\x00garbage" * 50)
    nan = tone(1.2, 16000)
    nan[100] = np.nan
    sf.write(os.path.join(root, "aa", "clips", "nan.wav"), nan, 16000, subtype="FLOAT")
    with open(os.path.join(root, "aa", "train.tsv"), "a") as f:
        f.write("c\tcorrupt.wav\tSol.\taa\nc\tnan.wav\tSol.\taa\n")
    with open(os.path.join(root, "aa", "clip_durations.tsv"), "a") as f:
        f.write("corrupt.wav\t1200\nnan.wav\t1200\n")
    pipe = data_pipelines.build_input(make_cfg(root, languages=["aa"], batch_size=4), "train", "pretrain")
    try:
        take(pipe, 12)  # 48 rows: the 8 files about 6 times each
    finally:
        pipe.close()
    assert pipe.stats["counts"] == {"damaged": 1, "non_finite": 1}, pipe.stats
    [corrupt] = pipe.stats["examples"]["damaged"]
    assert "corrupt.wav" in corrupt and "damaged or truncated WAV" in corrupt  # the decoder's words kept
    assert "nan.wav" in pipe.stats["examples"]["non_finite"][0]


def test_demo_corpus_config_all_tasks():
    for task in data_pipelines.TASKS:
        cfg = data_pipelines.demo_corpus_config(task, batch_size=4)
        pipe = data_pipelines.build_input(cfg, "test", task)
        assert pipe.languages == list(data_pipelines.DEMO_LANGUAGES)
        batch = next(pipe)
        assert batch["audio"].shape[0] == 4
        assert ("labels" in batch) == (task in ("ctc", "st"))
    assert pipe.num_batches >= 80 // 4


def test_sources_as_named_mapping_in_a_frozen_config():
    import ml_collections

    d = data_pipelines.demo_corpus_config("lid", batch_size=4).to_dict()
    d["sources"] = {
        "demo": {
            "type": "common_voice",
            "path": data_pipelines.DEMO_CORPUS_DIR,
            "languages": ["sw"],
        }
    }
    pipe = data_pipelines.build_input(ml_collections.FrozenConfigDict(d), "dev", "lid")
    assert pipe.languages == ["sw"]
    assert next(pipe)["audio"].shape[0] == 4


def test_import_is_light_and_tensorflow_stays_cpu_only():
    import subprocess
    import sys

    code = (
        "import os, sys, data_pipelines\n"
        "assert 'tensorflow' not in sys.modules, 'importing data_pipelines must not load TF'\n"
        "os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None)\n"
        "from data_pipelines.tf_runtime import import_tf\n"
        "tf = import_tf()\n"
        "assert tf.config.get_visible_devices('GPU') == []\n"
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # The quiet level is set before TensorFlow loads. What TensorFlow still prints to stderr is not
    # asserted on: on AVX-512 Intel CPUs absl/oneDNN print start-up lines whatever the level, and a
    # test that reads third-party log lines fails by CPU model.
    assert out.stdout.strip() == "3"
    # A user's explicit level is kept.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code.replace("os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None)\n", "")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize("min_len", [8000, 8200, 32000])
def test_auto_bucket_boundaries(min_len):
    b = sampling.bucket_boundaries(min_len, 320000, 8, 320)
    assert b == sorted(set(b)) and len(b) <= 8
    assert all(x % 320 == 0 for x in b)
    assert b[0] <= min_len < b[0] + 320 and b[-1] == 320000
    ratios = np.array(b[1:]) / np.array(b[:-1])
    assert ratios.max() / ratios.min() < 1.2  # geometric spacing
    assert sampling.bucket_boundaries(0, 40000, 4, 320, given=[16000, 50000]) == [
        16000,
        40000,
    ]


def _upper_case_corpus(root):
    """A Common Voice corpus whose transcripts are upper case, and its upper-case vocab.json."""
    write_common_voice(root, {"aa": 6, "cc": 6}, "train", seed=3)
    write_common_voice(root, {"aa": 3, "cc": 3}, "dev", seed=4)
    chars = set()
    for lang in ("aa", "cc"):
        for split in ("train", "dev"):
            path = os.path.join(root, lang, f"{split}.tsv")
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            rows = [lines[0]] + [
                "\t".join(c.upper() if i == 2 else c for i, c in enumerate(line.split("\t"))) for line in lines[1:]
            ]
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(rows) + "\n")
            for line in rows[1:]:
                chars.update(text.normalize_text(line.split("\t")[2], lang, {lang: {"lowercase": False}}))
    chars.discard(" ")
    vocab = text.Vocabulary([*text.SPECIAL_TOKENS, text.WORD_DELIMITER, *sorted(chars)])
    path = os.path.join(root, "vocab.json")
    with open(path, "w", encoding="utf-8") as f:
        f.write(vocab.to_json())
    return path, vocab


def _unk_rate(root, split, vocab, per_language=None):
    """The reference: share of normalised label characters (spaces excluded) not in `vocab`."""
    total = unknown = 0
    for lang in ("aa", "cc"):
        with open(os.path.join(root, lang, f"{split}.tsv"), encoding="utf-8") as f:
            for line in f.read().splitlines()[1:]:
                norm = text.normalize_text(line.split("\t")[2], lang, per_language).replace(" ", "")
                total += len(norm)
                unknown += sum(c not in vocab.index for c in norm)
    return unknown / total


def test_vocabulary_that_disagrees_with_the_normaliser_stops_before_training(tmp_path, caplog):
    root = str(tmp_path)
    path, vocab = _upper_case_corpus(root)
    cfg = make_cfg(root)
    cfg.vocabulary.path = path
    want = _unk_rate(root, "train", vocab)
    assert want > 0.9  # the default normaliser lower-cases: nearly every label is <unk>
    with pytest.raises(ValueError) as err:
        data_pipelines.build_input(cfg, "train", "ctc")
    msg = str(err.value)
    assert f"({want:.1%})" in msg and path in msg
    assert "data.text.per_language" in msg and "data.vocabulary.max_unk_rate" in msg
    # Measured, not guessed: with the limit raised the run goes on and reports the same rate.
    cfg.vocabulary.max_unk_rate = 1.0
    pipe = data_pipelines.build_input(cfg, "train", "ctc")
    assert pipe.unk_rate == pytest.approx(want, abs=1e-12)
    # An eval split only warns (training has been checked already).
    cfg.vocabulary.max_unk_rate = 0.05
    with caplog.at_level("WARNING"):
        dev = data_pipelines.build_input(cfg, "dev", "ctc", repeat=False)
    assert dev.unk_rate == pytest.approx(_unk_rate(root, "dev", vocab), abs=1e-12)
    assert "max_unk_rate" in caplog.text
    # The fix the message names: the normaliser keeps case, and nothing is unknown.
    keep_case = {"aa": {"lowercase": False}, "cc": {"lowercase": False}}
    cfg.text.per_language = keep_case
    assert data_pipelines.build_input(cfg, "train", "ctc").unk_rate == _unk_rate(root, "train", vocab, keep_case) == 0
