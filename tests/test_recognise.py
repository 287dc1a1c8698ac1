"""Speech recognition as practitioners use it, on the shared CTC run (tests/finetune_testlib.py):
an LM made from the run's training transcripts, LM beam search in `transcribe`, long recordings in
chunks, timestamps, and `evaluate` reproducing the trainer's eval numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import data_pipelines
from tests.finetune_testlib import ctc_run  # noqa: F401 - pytest fixture
from tests.trainer_testlib import REPO

RATE = 16000
GAP_S = 0.3  # silence between joined clips


def _cli(module: str, *args: str, cwd: str = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def _clips(split: str, lang: str = "es") -> list[tuple[str, str]]:
    """(clip path, sentence) of a split of the shipped corpus."""
    with open(os.path.join(data_pipelines.DEMO_CORPUS_DIR, lang, f"{split}.tsv"), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    return [(os.path.join(data_pipelines.DEMO_CORPUS_DIR, lang, "clips", r[1]), r[2]) for r in rows]


def joined_recording(path: str, clips: list[tuple[str, str]], min_seconds: float = 0.0):
    """Writes clips (repeated until `min_seconds`) one after another with GAP_S of silence.

    Returns:
      [(sentence, start s, end s)] of the clips in the recording.
    """
    import soundfile

    parts, spans, t, i = [], [], 0.0, 0
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    while i < len(clips) or t < min_seconds:
        clip, sentence = clips[i % len(clips)]
        # Each clip at unit variance, as the model saw it in training (the recording is normalised
        # as a whole).
        wave = np.asarray(data_pipelines.normalize(data_pipelines.load_audio(clip, sampling_rate=RATE)), np.float32)
        parts += [wave, gap]
        spans.append((sentence, t, t + wave.size / RATE))
        t += (wave.size + gap.size) / RATE
        i += 1
    soundfile.write(path, np.concatenate(parts), RATE, subtype="FLOAT")
    return spans


@pytest.fixture(scope="module")
def train_lm(ctc_run, tmp_path_factory):  # noqa: F811
    """A trigram ARPA of the CTC run's training transcripts, made by `python -m xlsr_jax.lm`."""
    out = str(tmp_path_factory.mktemp("lm") / "train.arpa")
    proc = _cli("xlsr_jax.lm", "--ckpt", ctc_run["checkpoints"], "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(out + "\t1-grams=")
    return out


@pytest.mark.slow  # the shared fine-tuning run of finetune_testlib
@pytest.mark.integration
def test_transcribe_with_lm_beam_search(ctc_run, train_lm):  # noqa: F811
    from xlsr_jax import lm

    clips = [c for c, _ in _clips("train")[:4] + _clips("test")[:2]]
    greedy = _cli("xlsr_jax.transcribe", "--ckpt", ctc_run["checkpoints"], *clips)
    assert greedy.returncode == 0, greedy.stderr
    # A beam of one with no LM weight is greedy decoding.
    beam1 = _cli(
        "xlsr_jax.transcribe",
        "--ckpt",
        ctc_run["checkpoints"],
        "--beam_width",
        "1",
        "--alpha",
        "0",
        "--beta",
        "0",
        *clips,
    )
    assert beam1.returncode == 0, beam1.stderr
    assert beam1.stdout == greedy.stdout
    with_lm = _cli(
        "xlsr_jax.transcribe",
        "--ckpt",
        ctc_run["checkpoints"],
        "--lm",
        train_lm,
        "--alpha",
        "0.5",
        "--beta",
        "1",
        *clips,
    )
    assert with_lm.returncode == 0, with_lm.stderr
    rows = [line.split("\t") for line in with_lm.stdout.splitlines()]
    assert [p for p, _ in rows] == clips
    lexicon = set(lm.arpa_unigrams(train_lm))
    for _, text in rows:
        assert text and set(text.split()) <= lexicon  # lexicon-constrained: only the LM's words


@pytest.fixture(scope="module")
def local_model(tmp_path_factory):
    """An exported random CTC model whose outputs depend on a few frames around each frame only
    (no Transformer blocks: the conv feature encoder, its per-frame layer norm and the
    positional conv, 16 frames wide). Chunks with 4 s of context must then reproduce the whole
    recording's frames exactly. Self-attention sees the whole input, so for a full model chunked
    and whole transcripts agree only as far as 4 s of context is enough (the tiny model trained
    on 3 s clips, tests/finetune_testlib.py, transcribes neither a 60 s recording nor its 20 s
    chunks correctly)."""
    from tests.convert_testlib import our_param_shapes, random_params
    from xlsr_jax import pretrained
    from xlsr_jax.models import Wav2Vec2Config

    tokens = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefgh"]
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=0,
        num_attention_heads=4,
        intermediate_size=40,
        conv_dim=(16,) * 7,  # the standard 7-layer encoder: 320 samples per frame
        feat_extract_norm="layer",
        conv_bias=True,
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        vocab_size=len(tokens),
    )
    params = random_params(our_param_shapes(config, "Wav2Vec2ForCTC"))
    out = str(tmp_path_factory.mktemp("local") / "ctc")
    return pretrained.save_pretrained(out, params, config, "Wav2Vec2ForCTC", vocab={t: i for i, t in enumerate(tokens)})


@pytest.mark.integration  # runs the CLI
def test_long_recording_chunked_equals_whole(local_model, tmp_path):
    from xlsr_jax.transcribe import Transcriber

    path = str(tmp_path / "long.wav")
    spans = joined_recording(path, _clips("test") + _clips("dev"), min_seconds=60.0)
    assert spans[-1][2] + GAP_S >= 60.0  # the recording is at least a minute long
    whole = Transcriber(local_model, chunk_s=0)
    chunked = Transcriber(local_model, batch_size=2)  # defaults: 20 s chunks, 4 s strides
    (out_whole,), errors = whole.emissions([path])
    assert errors == []
    (out_chunked,), _ = chunked.emissions([path])
    np.testing.assert_array_equal(out_chunked.times, out_whole.times)
    np.testing.assert_array_equal(out_chunked.ids, out_whole.ids)
    np.testing.assert_allclose(out_chunked.log_probs, out_whole.log_probs, atol=1e-4)
    text = chunked.decode(out_chunked)[0]
    assert text == whole.decode(out_whole)[0] and len(text) > 100
    assert chunked._forward._cache_size() == 1  # every chunk batch has one shape: one compilation
    # The README's form of the command.
    proc = _cli("xlsr_jax.transcribe", "--ckpt", local_model, "--chunk_s", "20", "--stride_s", "4", path)
    assert proc.returncode == 0 and proc.stdout == f"{path}\t{text}\n"
    with pytest.raises(ValueError, match="stride_s must be below half"):
        Transcriber(local_model, chunk_s=8, stride_s=4)


def test_chunk_plan_covers_the_recording_once():
    from xlsr_jax.transcribe import chunks

    hop = 320
    for n in (320_000 + 1, 500_000, 1_017_600, 9_600_123):
        plan = chunks(n, 320_000, 64_000, hop)
        assert plan[0][:2] == (0, 0) and plan[-1][2] == n
        for (start, keep_from, keep_to), (_, next_from, _) in zip(plan, plan[1:]):
            assert keep_to == next_from and start % hop == 0  # kept ranges tile the recording
            assert keep_from - start >= 64_000 * (start > 0) and start + 320_000 - keep_to >= 64_000
        last_start = plan[-1][0]
        assert last_start % hop == 0 and 0 <= last_start + 320_000 - n < hop


@pytest.mark.slow  # the shared fine-tuning run of finetune_testlib
@pytest.mark.integration
@pytest.mark.parametrize("unit", ["word", "char"])
def test_timestamps_json_lines(ctc_run, train_lm, tmp_path, unit):  # noqa: F811
    path = str(tmp_path / "joined.wav")
    spans = joined_recording(path, _clips("train")[:3])
    for extra in ([], ["--lm", train_lm]):
        proc = _cli("xlsr_jax.transcribe", "--ckpt", ctc_run["checkpoints"], "--timestamps", unit, *extra, path)
        assert proc.returncode == 0, proc.stderr
        (line,) = proc.stdout.splitlines()
        row = json.loads(line)
        units = row[f"{unit}s"]
        assert row["path"] == path and units
        starts = [u["start"] for u in units]
        assert starts == sorted(starts)
        assert all(0 <= u["start"] < u["end"] <= spans[-1][2] + GAP_S for u in units)
        if unit == "word":
            assert " ".join(u["word"] for u in units) == " ".join(row["text"].split())
        else:
            assert "".join(u["char"] for u in units) == row["text"].replace(" ", "")
        # Times are 20 ms frames: every value a multiple of 0.02 s.
        assert all(abs(u["start"] / 0.02 - round(u["start"] / 0.02)) < 1e-6 for u in units)


@pytest.mark.slow  # the shared fine-tuning run of finetune_testlib
@pytest.mark.integration
def test_evaluate_reproduces_the_trainers_eval(ctc_run, train_lm, tmp_path):  # noqa: F811
    from tests.trainer_testlib import read_metrics

    logged = read_metrics(ctc_run["workdir"])[ctc_run["steps"]]
    out = str(tmp_path / "eval")
    proc = _cli("xlsr_jax.evaluate", "--ckpt", ctc_run["checkpoints"], "--split", "dev", "--out", out)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["step"] == ctc_run["steps"]
    assert report["per_language"]["all"]["wer"] == logged["eval/wer"]
    assert report["per_language"]["all"]["cer"] == logged["eval/cer"]
    assert report["per_language"]["es"]["cer"] == logged["eval/cer/es"]
    with open(os.path.join(out, "utterances.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == report["per_language"]["all"]["utterances"] == len(_clips("dev"))
    assert {"language", "reference", "hypothesis", "wer", "cer"} <= set(rows[0])
    # With the LM: greedy columns unchanged, LM columns beside them.
    proc = _cli("xlsr_jax.evaluate", "--ckpt", ctc_run["checkpoints"], "--split", "dev", "--lm", train_lm, "--out", out)
    assert proc.returncode == 0, proc.stderr
    header, *table = proc.stdout.splitlines()[1:]
    assert header.split("\t") == ["language", "utts", "WER", "CER", "WER+LM", "CER+LM"]
    cells = dict((r.split("\t")[0], r.split("\t")) for r in table)
    assert float(cells["all"][3]) == pytest.approx(100 * logged["eval/cer"], abs=0.005)
    with open(os.path.join(out, "utterances.jsonl"), encoding="utf-8") as f:
        lm_rows = [json.loads(line) for line in f]
    assert [r["hypothesis"] for r in lm_rows] == [r["hypothesis"] for r in rows]
    assert sum(bool(r["hypothesis_lm"]) for r in lm_rows) > len(lm_rows) / 2  # the search finds words
    # alpha/beta grid on dev.
    proc = _cli(
        "xlsr_jax.evaluate", "--ckpt", ctc_run["checkpoints"], "--split", "dev", "--lm", train_lm, "--tune",
        "--alphas", "0,1", "--betas", "0,2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "alpha\tbeta\tWER\tCER" and len(lines) == 5
    wers = [float(line.split("\t")[2]) for line in lines[1:]]
    assert wers == sorted(wers)


@pytest.mark.slow  # the shared fine-tuning run of finetune_testlib
@pytest.mark.integration
def test_trainer_eval_reports_lm_rates(ctc_run, train_lm, tmp_path):  # noqa: F811
    """`eval.lm` in a run's config: the CTC task's eval report (what the trainer logs) carries
    wer_lm / cer_lm beside the greedy rates, and the JSON report the LM counts."""
    import ml_collections

    from xlsr_jax import checkpointing, tasks
    from xlsr_jax.tasks import finetune

    config = ml_collections.ConfigDict(checkpointing.read_config(ctc_run["checkpoints"]))
    with config.unlocked():
        config.eval.lm, config.eval.lm_alpha, config.eval.lm_beta = train_lm, 1.0, 0.0
    task = tasks.create_task(config)
    params = checkpointing.read_params_numpy(os.path.join(ctc_run["checkpoints"], str(ctc_run["steps"])))
    records = finetune.collect_eval_records(task, params, config.data, "dev", max_batches=1)
    assert set(records[0][1]) == {"ids", "log_probs", "frame_padding"}
    metrics = task.eval_report(records, 7, str(tmp_path))
    assert {"wer", "cer", "wer_lm", "cer_lm", "wer_lm/es", "cer_lm/es"} <= set(metrics)
    assert 0 < metrics["cer_lm"] < 1.5
    with open(tmp_path / "eval" / "ctc_7.json", encoding="utf-8") as f:
        report = json.load(f)
    assert report["per_language_lm"]["all"]["cer"] == metrics["cer_lm"]


def _peak_rss_mb(*args: str) -> tuple[float, str]:
    """Runs `python -m xlsr_jax.transcribe ARGS` in a fresh process: (its peak RSS in MB, stdout)."""
    code = (
        "import resource, runpy, sys\n"
        f"sys.argv = ['transcribe', *{list(args)!r}]\n"
        "try:\n    runpy.run_module('xlsr_jax.transcribe', run_name='__main__')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK ")][-1]
    return float(peak.split()[1]), proc.stdout


@pytest.mark.slow  # the shared fine-tuning run of finetune_testlib
@pytest.mark.integration
def test_ten_minute_recording_in_flat_memory(ctc_run, tmp_path):  # noqa: F811
    """A 10-minute recording transcribes in about the memory of a 1-minute one (chunks of 20 s);
    in one piece, self-attention's memory grows with the square of the length."""
    short, long = str(tmp_path / "one_minute.wav"), str(tmp_path / "ten_minutes.wav")
    joined_recording(short, _clips("train")[:10], min_seconds=60.0)
    joined_recording(long, _clips("train")[:10], min_seconds=600.0)
    peak_short, _ = _peak_rss_mb("--ckpt", ctc_run["checkpoints"], short)
    peak_long, out = _peak_rss_mb("--ckpt", ctc_run["checkpoints"], long)
    assert out.startswith(long + "\t") and len(out.split()) > 100
    # Measured on the tiny model: 830 MB for 61 s, 880 MB for 601 s (the audio itself is 38 MB);
    # in one piece 120 s already took 2.1 GB.
    assert peak_long < peak_short + 200, (peak_short, peak_long)
