"""Smoke test of experiments/benchmark.py: one repeat of the tiny config, JSON fields checked.

Not a timing test: it proves the benchmark runs end to end (both sides when torch is installed)
and reports every field the README and the performance issue quote.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration  # runs experiments/benchmark.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "benchmark.py")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _run(*flags: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, SCRIPT, *flags], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def _check_jax_fields(side: dict) -> None:
    keys = ("compile_s", "compile_cpu_s", "flops", "model_flops", "peak_bytes", "median_s", "min_s")
    for key in keys + ("audio_sec_per_sec", "mfu", "mfu_measured_peak"):
        assert key in side, key
    assert side["compile_s"] > 0 and side["median_s"] > 0
    assert side["flops"] > 1e8  # XLA's cost analysis saw the convolutions
    assert side["peak_bytes"] > 0
    # MFU against a fixed CPU figure (CPU_PEAK_FLOPS, the 2-core development box): a larger CPU
    # can exceed 1, so only its sign is machine-independent.
    assert side["mfu"] > 0
    assert side["mfu_measured_peak"] > 0


@pytest.mark.skipif(not (_has("torch") and _has("transformers")), reason="needs torch + transformers (the torch extra)")
def test_benchmark_tiny_both_sides():
    report = _run("--configs", "tiny", "--repeats", "1", "--torch_warmup", "1", "--seconds", "1", "--batch", "2")
    assert report["batch"] == 2 and report["torch_version"]
    (record,) = report["configs"]
    assert record["config"] == "tiny" and record["frames"] == 49
    # The same architecture on both sides: transformers counts the same parameters as our tree.
    assert record["num_params"] == record["torch_num_params"]
    roofline = report["measured_roofline"]
    assert roofline["matmul_flops"] > 1e9 and roofline["memory_bytes_per_s"] > 1e8
    for step in ("train", "infer"):
        _check_jax_fields(record[step]["jax"])
        torch_side = record[step]["torch"]
        assert torch_side["median_s"] > 0 and len(torch_side["times_s"]) == 1
        assert record[step]["speedup_vs_torch"] == pytest.approx(
            torch_side["median_s"] / record[step]["jax"]["median_s"]
        )


def test_benchmark_rejects_unknown_config():
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--configs", "tiny,huge"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode != 0 and "huge" in proc.stderr


def test_scanned_model_flops_count_every_layer():
    """XLA counts a scanned loop's body once; MFU must use the unscanned twin's FLOPs instead."""
    spec = importlib.util.spec_from_file_location("xlsr_benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args(["--configs", "tiny", "--steps", "infer", "--scan_layers", "1"])
    cfg = bench.get_config("tiny", args)
    audio, padding = bench.make_batch(cfg, 2, 16000)
    scanned = bench.JaxSide(cfg, audio, padding, abstract=True)
    scanned.compile("infer")
    plain = bench.JaxSide(bench.dataclasses.replace(cfg, scan_layers=False), audio, padding, abstract=True)
    plain.compile("infer")
    assert scanned.info["infer"]["flops"] < plain.info["infer"]["flops"]  # the undercount is real
    assert scanned.info["infer"]["model_flops"] == pytest.approx(plain.info["infer"]["flops"], rel=0.02)


def test_benchmark_translate_line():
    report = _run("--configs", "tiny", "--steps", "translate", "--repeats", "1", "--no_torch", "--seconds", "1")
    (record,) = report["configs"]
    line = record["translate"]
    for key in ("end_to_end_tokens_per_sec", "decoder_tokens_per_sec", "late_over_early_step"):
        assert line[key] > 0, key
    assert line["generate_16_tokens"]["median_s"] > 0 and line["generate_64_tokens"]["median_s"] > 0
    assert "train" not in record and "infer" not in record
