"""The benchmark recipes run: a few fine-tuning steps through configs/finetune/{voxlingua107,
voxpopuli,babel}.py on tiny synthetic copies of their corpora, and the VoxLingua107 recipe
beating chance on the shipped corpus arranged in VoxLingua107's layout."""

from __future__ import annotations

import json
import os

import pytest

from tests.data_pipelines.benchmark_testlib import (
    arrange_demo_as_voxlingua,
    needs_espeak,
    write_babel,
    write_voxlingua107,
    write_voxpopuli,
)
from tests.finetune_testlib import _params, _quiet_training_config, ctc_run  # noqa: F401 - ctc_run: fixture

SMOKE_STEPS = 2


def _smoke(config, workdir):
    """Shrinks a benchmark config to a CPU smoke run: one 2 s bucket, batch 2, 2 updates."""
    from xlsr_jax import trainer

    config.data.bucket_boundaries = [32000]
    config.data.max_sample_size = 32000
    config.data.min_sample_size = 4000
    config.eval.num_batches = 2
    config = _quiet_training_config(config, SMOKE_STEPS, SMOKE_STEPS)
    trainer.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.slow
@needs_espeak
@pytest.mark.parametrize("benchmark", ["voxlingua107", "voxpopuli", "babel"])
def test_benchmark_config_fine_tunes_on_its_synthetic_corpus(benchmark, tmp_path):
    import importlib

    from tests.trainer_testlib import read_metrics

    corpus = str(tmp_path / "corpus")
    writer, arg, report = {
        "voxlingua107": (write_voxlingua107, "langs=es+sw+tr", "lid"),
        "voxpopuli": (write_voxpopuli, "lang=es", "ctc"),
        "babel": (write_babel, "lang=sw", "ctc"),
    }[benchmark]
    writer(corpus)
    module = importlib.import_module(f"configs.finetune.{benchmark}")
    config = module.get_config(f"{arg},path={corpus},preset=tiny,steps={SMOKE_STEPS},batch=2,lr=1e-3")
    assert config.eval.split == "dev" and config.init.checkpoint == ""
    workdir = str(tmp_path / "run")
    resolved = _smoke(config, workdir)
    metrics = read_metrics(workdir)
    assert SMOKE_STEPS in metrics and all(v == v for v in metrics[SMOKE_STEPS].values())  # no NaN
    assert os.path.exists(os.path.join(workdir, "eval", f"{report}_{SMOKE_STEPS}.json"))
    if report == "ctc":  # the pure config left vocab_size to the task, which recorded it
        assert resolved["model"]["vocab_size"] > 5
        assert f"eval/cer/{config.data.languages[0]}" in metrics[SMOKE_STEPS]
    else:
        assert resolved["model"]["num_labels"] == 3 and "eval/accuracy" in metrics[SMOKE_STEPS]


LID_STEPS = 150


@pytest.mark.slow
def test_voxlingua107_recipe_beats_chance_on_the_demo_corpus_in_voxlingua_layout(tmp_path, ctc_run):  # noqa: F811
    from configs.finetune import voxlingua107
    from xlsr_jax import tasks, trainer
    from xlsr_jax.tasks import finetune, lid

    root = str(tmp_path / "voxlingua_demo")
    codes = arrange_demo_as_voxlingua(root)  # ar, es, zh: 60 train / 10 dev clips each
    config = voxlingua107.get_config(
        f"path={root},langs={'+'.join(codes)},preset=tiny,steps={LID_STEPS},batch=8,lr=3e-3,crop=32000"
    )
    # As tests/finetune_testlib.py's demo LID run: one 2 s bucket, no masking or LayerDrop in a
    # short run, a long hold at the peak, a 10% freeze, from the CTC run's encoder.
    config.data.bucket_boundaries = [32000]
    config.data.min_sample_size = 8000
    config.model.mask_time_prob = 0.0
    config.model.mask_feature_prob = 0.0
    config.model.layerdrop = 0.0
    config.optim.phase_ratio = (0.1, 0.7, 0.2)
    config.finetune.freeze_finetune_updates = LID_STEPS // 10
    config = _quiet_training_config(config, LID_STEPS, LID_STEPS)
    config.init.checkpoint = ctc_run["checkpoints"]
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(config, workdir)
    task = tasks.create_task(config)
    records = finetune.collect_eval_records(task, _params(workdir, LID_STEPS), config.data, "dev")
    report = lid.lid_report(records, task.languages)
    print("VoxLingua-layout LID accuracy", report["accuracy"], report["per_language"])
    # 10 dev clips per language: under chance (1/3), P(accuracy >= 0.55) is below 0.5%.
    assert report["utterances"] == 30 and report["accuracy"] >= 0.55, report
    with open(os.path.join(workdir, "eval", f"lid_{LID_STEPS}.json"), encoding="utf-8") as f:
        assert len(json.load(f)["confusion"]) == 3  # per-language confusion in the eval report


@pytest.mark.integration
@needs_espeak
def test_train_py_reports_a_layout_mistake_in_one_line(tmp_path):
    import subprocess
    import sys

    from tests.trainer_testlib import REPO

    pack = tmp_path / "IARPA_BABEL_OP2_202"
    write_babel(str(pack))
    txt = sorted((pack / "conversational" / "training" / "transcription").iterdir())[0]
    txt.write_text(txt.read_text(encoding="utf-8") + "more words\n[99.000]\n", encoding="utf-8")  # past the audio
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "train.py"),
            "--config",
            os.path.join(REPO, "configs", "finetune", "babel.py") + f":lang=sw,path={pack},preset=tiny",
            "--workdir",
            str(tmp_path / "run"),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: corpus layout error: ") and str(txt) in last, last


def test_benchmark_configs_are_pure():
    """The recipes build without their corpora (no file reads in get_config) and fix what the
    benchmark fixes: VoxLingua107's 107 classes in the corpus's order, CTC vocab left to the task."""
    from configs.finetune import babel, voxlingua107, voxpopuli
    from data_pipelines.voxlingua import VOXLINGUA107_LANGUAGES

    lid = voxlingua107.get_config("path=/nonexistent/voxlingua107")
    assert lid.task == "lid" and lid.model.num_labels == 107 == len(set(lid.data.languages))
    assert list(lid.data.languages) == list(VOXLINGUA107_LANGUAGES) == sorted(VOXLINGUA107_LANGUAGES)
    vp = voxpopuli.get_config("lang=hr,path=/nonexistent/voxpopuli")
    assert vp.data.sources[0]["text_column"] == "normalized_text" and vp.data.languages == ["hr"]
    bb = babel.get_config("lang=sw,path=/nonexistent/IARPA_BABEL_OP2_202")
    for config in (vp, bb):
        assert config.task == "ctc" and config.model.vocab_size == 0  # resolved by the CTC task
        assert config.model.feature_grad_mult == 0.0 and config.finetune.freeze_finetune_updates == 10000
        # fairseq examples/wav2vec/xlsr: finetune.yaml masking and lr, max_update per benchmark.
        assert (config.model.mask_time_prob, config.model.mask_feature_prob, config.optim.lr) == (0.75, 0.25, 3e-4)
    assert (vp.train.total_steps, bb.train.total_steps) == (50000, 26000)
    assert (vp.data.batch_size, bb.data.batch_size) == (160, 200)  # 1600 s at ~10 s / ~8 s a segment
    two_b = babel.get_config("lang=sw,preset=xls_r_2b")
    assert two_b.optim.lr == 3e-5 and two_b.data.batch_size == 480  # 2B: [3e-6, 3e-5], 3840 s
    explicit = babel.get_config("lang=sw,lr=1e-4,batch=7")  # explicit values win
    assert explicit.optim.lr == 1e-4 and explicit.data.batch_size == 7
