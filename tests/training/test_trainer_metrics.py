"""Tests for xlsr_jax.metrics (TensorBoard + JSONL + console) and the codebook-collapse check."""

import json
import os

import ml_collections
import pytest

from xlsr_jax import metrics


def test_writer_writes_event_file_and_jsonl(tmp_path):
    jsonl = str(tmp_path / "metrics.jsonl")
    writer = metrics.MetricWriter(str(tmp_path / "tb"), total_steps=10, progress_bar=False, jsonl_path=jsonl)
    writer.write_scalars(5, {"train/loss": 1.5, "perf/mfu": 0.25})
    writer.write_scalars(10, {"eval/loss": 2.0})
    writer.close()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb"))
    with open(jsonl, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert rows == [{"step": 5, "train/loss": 1.5, "perf/mfu": 0.25}, {"step": 10, "eval/loss": 2.0}]


def test_peak_flops_configured_or_looked_up():
    assert metrics.peak_flops_per_device(123.0) == 123.0
    assert metrics.peak_flops_per_device(0.0) == 0.0  # CPU: unknown kind, MFU not reported


def test_codebook_collapse_warning():
    from configs import common
    from xlsr_jax import tasks
    from xlsr_jax.models import get_preset

    config = common.pretraining_config(
        model=get_preset("tiny").to_dict(),
        data=ml_collections.ConfigDict(),
        total_steps=10,
        lr=1e-3,
        warmup_steps=1,
        gumbel_temperature=(2.0, 0.5, 0.999),
    )
    task = tasks.create_task(config)
    num_codes = task.model_config.num_codevectors  # G x V = 64 for the tiny preset
    assert task.check_metrics({"train/code_perplexity": 0.5 * num_codes}) == []
    (warning,) = task.check_metrics({"train/code_perplexity": 0.05 * num_codes})
    assert "codebook collapse" in warning and str(num_codes) in warning
    config.task = "nope"
    with pytest.raises(ValueError, match="unknown task"):
        tasks.create_task(config)


def test_persistent_compilation_cache_goes_to_the_workdir_unless_configured(tmp_path, monkeypatch):
    import jax

    from xlsr_jax import trainer

    cfg = ml_collections.ConfigDict({"train": {"compilation_cache_dir": ""}})
    previous = jax.config.jax_compilation_cache_dir
    min_time = jax.config.jax_persistent_cache_min_compile_time_secs
    try:
        # Already configured for the process (JAX_COMPILATION_CACHE_DIR, as the tests do): kept.
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "env"))
        assert trainer._setup_compilation_cache(cfg, str(tmp_path / "run")) == str(tmp_path / "env")
        jax.config.update("jax_compilation_cache_dir", None)
        assert trainer._setup_compilation_cache(cfg, str(tmp_path / "run")) == str(tmp_path / "run" / "jax_cache")
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "run" / "jax_cache")
        jax.config.update("jax_compilation_cache_dir", None)
        cfg.train.compilation_cache_dir = "none"
        assert trainer._setup_compilation_cache(cfg, str(tmp_path / "run")) is None
        cfg.train.compilation_cache_dir = str(tmp_path / "shared")
        assert trainer._setup_compilation_cache(cfg, str(tmp_path / "run")) == str(tmp_path / "shared")
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)
