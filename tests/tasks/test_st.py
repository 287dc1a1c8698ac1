"""The `st` task: the jitted train step lowers the loss, evaluation scores BLEU/chrF per pair,
the encoder freezes as in CTC fine-tuning, and a trained run translates from the command line."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("sentencepiece", reason="needs the translation extra: pip install -e '.[translation]'")
pytest.importorskip("sacrebleu", reason="needs the translation extra: pip install -e '.[translation]'")


@pytest.fixture(scope="module")
def setup():
    import data_pipelines
    from configs.finetune import demo_st
    from xlsr_jax import tasks

    config = demo_st.get_config("steps=40,batch=4,langs=es+ru")
    task = tasks.create_task(config)
    pipe = data_pipelines.build_input(config.data, "train", task.data_task)
    try:
        batch = {k: jnp.asarray(v) for k, v in next(pipe).items()}
    finally:
        pipe.close()
    params = nn.meta.unbox(task.init_params(jax.random.PRNGKey(0), task.example_batch()))
    return config, task, batch, params


def test_jitted_train_step_lowers_the_loss_on_a_fixed_batch(setup):
    from xlsr_jax.trainer import TrainState, make_train_step

    config, task, batch, params = setup
    tx, lr = task.create_optimizer(config.optim)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(1),
        num_skipped=jnp.zeros((), jnp.int32),
        bad_streak=jnp.zeros((), jnp.int32),
    )
    step = jax.jit(make_train_step(task, tx, lr))
    losses = []
    for _ in range(30):
        state, metrics = step(state, batch)
        losses.append(float(metrics["train/st_loss"]))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.6 * losses[0], losses
    # The feature encoder never moved; the encoder moved only after its frozen updates (4 of 40).
    moved = lambda path: (
        not np.array_equal(  # noqa: E731
            np.asarray(path(params)), np.asarray(path(state.params))
        )
    )
    assert not moved(lambda p: p["wav2vec2"]["feature_extractor"]["conv_layers_0"]["conv"]["kernel"])
    assert moved(lambda p: p["wav2vec2"]["encoder"]["layers_0"]["attention"]["q_proj"]["kernel"])
    assert moved(lambda p: p["adapter"]["layers_0"]["kernel"]) and moved(lambda p: p["decoder"]["layer_norm"]["scale"])


def test_targets_shift_and_ignore_padding(setup):
    _, task, batch, _ = setup
    labels, inputs = task._targets(batch)
    assert (inputs[:, 0] == 2).all() and (inputs[:, 1:] == labels[:, :-1]).all()
    assert (labels[np.asarray(batch["label_padding"])] == 1).all()
    lang = task.tokenizer.language_id("en")
    assert (np.asarray(labels[np.asarray(batch["valid"]), 0]) == lang).all()


def test_eval_outputs_and_report_per_pair(setup, tmp_path):
    import json

    _, task, batch, params = setup
    out = jax.device_get(jax.jit(task.eval_outputs)(params, batch))
    # Every generated sequence starts with </s> then its row's target-language token.
    assert (out["sequences"][:, 0] == 2).all()
    assert (out["sequences"][:, 1] == np.asarray(batch["labels"][:, 0])).all()
    host = {k: np.asarray(v) for k, v in batch.items() if k not in ("audio", "padding_mask")}
    metrics = task.eval_report([(host, out)], step=7, workdir=str(tmp_path))
    pairs = {f"{task.languages[int(i)]}_en" for i, v in zip(host["language"], host["valid"]) if v}
    assert {"bleu", "chrf"} | {f"bleu/{p}" for p in pairs} <= set(metrics)
    report = json.loads((tmp_path / "eval" / "st_7.json").read_text())
    assert report["step"] == 7 and set(report["pairs"]) == pairs | {"all"} and report["examples"]


@pytest.mark.slow
def test_trained_run_translates_and_exports(tmp_path):
    """A short `st` run: eval reports BLEU, the run translates files and converts to transformers."""
    import json
    import os

    import data_pipelines
    from configs.finetune import demo_st
    from xlsr_jax import trainer
    from xlsr_jax.convert.__main__ import main as convert_main
    from xlsr_jax.translate import Translator

    config = demo_st.get_config("steps=12,batch=4,langs=es")
    config.eval.every_steps = 12
    config.ckpt.every_steps = 12
    config.train.progress_bar = False
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(config, workdir)
    report = json.loads((tmp_path / "run" / "eval" / "st_12.json").read_text())
    assert set(report["pairs"]) == {"es_en", "all"}

    with open(os.path.join(data_pipelines.DEMO_CORPUS_DIR, "es", "test.tsv"), encoding="utf-8") as f:
        clip = os.path.join(data_pipelines.DEMO_CORPUS_DIR, "es", "clips", f.readlines()[1].split("\t")[1])
    translator = Translator(workdir, batch_size=1)
    assert translator.gen.forced_bos_token_id == translator.tokenizer.language_id("en")
    assert translator.gen.max_length == 32 and translator.gen.num_beams == 1  # the run's eval search
    texts, errors = translator([clip])
    assert errors == [] and isinstance(texts[0], str)

    transformers = pytest.importorskip("transformers", reason="export check needs transformers (the torch extra)")
    assert convert_main(["orbax-to-hf", workdir, str(tmp_path / "hf")]) == 0
    hf = transformers.SpeechEncoderDecoderModel.from_pretrained(tmp_path / "hf")
    assert hf.config.decoder.vocab_size == translator.tokenizer.vocab_size
    gen = transformers.GenerationConfig.from_pretrained(tmp_path / "hf")
    assert gen.forced_bos_token_id == translator.tokenizer.language_id("en")
    assert (tmp_path / "hf" / "sentencepiece.bpe.model").is_file()


def test_readme_recipe_variants_build():
    """The README's covost2 variants build (no file is read), 1B/2B sharded like pretraining."""
    from configs.finetune import covost2

    config = covost2.get_config("src=es,tgt=en,path=/data/covost2,init=ckpt/xls_r_300m")
    assert config.task == "st" and config.data.sources[0]["pairs"] == ["es_en"]
    assert config.init.checkpoint == "ckpt/xls_r_300m" and config.model.add_adapter
    assert config.st.label_smoothing == 0.1 and config.st.eval_beams == 5
    big = covost2.get_config("src=es,path=/data/covost2,size=2b,decoder=/m/mbart-large-50")
    assert big.mesh.fsdp == -1 and big.model.hidden_size == 1920
    assert big.data.target.tokenizer == "/m/mbart-large-50/sentencepiece.bpe.model"
    with pytest.raises(ValueError, match="size"):
        covost2.get_config("size=3b")
