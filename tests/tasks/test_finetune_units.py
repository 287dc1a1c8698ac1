"""Fast fine-tuning checks: exact freezing in the optimizer, init from pretrained, decoding, configs."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from xlsr_jax import checkpointing, decoding, optimizers
from xlsr_jax.tasks import finetune


def _optim_cfg(**overrides):
    cfg = ml_collections.ConfigDict(
        dict(
            name="adamw",
            lr=0.1,
            b1=0.9,
            b2=0.98,
            eps=1e-12,
            weight_decay=0.1,
            clip_grad_norm=0.0,
            schedule="tri_stage",
            total_steps=20,
            phase_ratio=(0.1, 0.4, 0.5),
            init_lr_scale=0.01,
            final_lr_scale=0.05,
        )
    )
    cfg.update(overrides)
    return cfg


def _params():
    rng = np.random.default_rng(0)
    leaf = lambda: jnp.asarray(rng.standard_normal(4), jnp.float32)  # noqa: E731
    return {
        "wav2vec2": {"feature_extractor": {"w": leaf()}, "encoder": {"w": leaf()}, "masked_spec_embed": leaf()},
        "lm_head": {"w": leaf()},
    }


def test_optimizer_freezes_feature_encoder_always_and_encoder_for_n_updates():
    freeze = 3
    tx, lr = optimizers.create_optimizer(_optim_cfg(), freeze_feature_encoder=True, freeze_updates=freeze)
    params = _params()
    state = tx.init(params)
    history = [params]
    grads_seen = []
    for i in range(6):
        grads = jax.tree.map(lambda p, i=i: jax.random.normal(jax.random.PRNGKey(i), p.shape), params)
        grads_seen.append(grads)
        updates, state = jax.jit(tx.update)(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(params)
    fe = lambda p: np.asarray(p["wav2vec2"]["feature_extractor"]["w"])  # noqa: E731
    enc = lambda p: np.asarray(p["wav2vec2"]["encoder"]["w"])  # noqa: E731
    head = lambda p: np.asarray(p["lm_head"]["w"])  # noqa: E731
    for p in history:  # bit-identical, weight decay included
        np.testing.assert_array_equal(fe(p), fe(history[0]))
    for p in history[: freeze + 1]:
        np.testing.assert_array_equal(enc(p), enc(history[0]))
        np.testing.assert_array_equal(p["wav2vec2"]["masked_spec_embed"], history[0]["wav2vec2"]["masked_spec_embed"])
    assert not np.array_equal(enc(history[freeze + 1]), enc(history[freeze]))
    assert not np.array_equal(head(history[1]), head(history[0]))
    # The encoder's first update is a fresh Adam step (|m_hat / sqrt(v_hat)| = 1) at the global
    # schedule's learning rate for update `freeze`, plus decoupled weight decay.
    g = np.asarray(grads_seen[freeze]["wav2vec2"]["encoder"]["w"])
    want = -float(lr(freeze)) * (np.sign(g) + 0.1 * enc(history[freeze]))
    np.testing.assert_allclose(enc(history[freeze + 1]) - enc(history[freeze]), want, rtol=1e-5, atol=1e-7)


def test_parameter_groups_label_whole_boxes():
    boxed = jax.tree.map(lambda x: nn.LogicallyPartitioned(x, ("embed",)), _params())
    labels = optimizers.parameter_groups(boxed, freeze_feature_encoder=True)
    assert labels["wav2vec2"]["feature_extractor"]["w"] == optimizers.FROZEN
    assert labels["wav2vec2"]["encoder"]["w"] == optimizers.ENCODER
    assert labels["lm_head"]["w"] == optimizers.HEAD
    unfrozen = optimizers.parameter_groups(_params(), freeze_feature_encoder=False)
    assert unfrozen["wav2vec2"]["feature_extractor"]["w"] == optimizers.ENCODER


def test_stop_encoder_gradient_zeroes_only_the_encoder_while_frozen():
    params = _params()

    def loss(p, frozen):
        p = optimizers.stop_encoder_gradient(p, frozen)
        return sum(jnp.sum(x**2) for x in jax.tree.leaves(p))

    g_frozen = jax.grad(loss)(params, jnp.array(True))
    g_free = jax.grad(loss)(params, jnp.array(False))
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g_frozen["wav2vec2"]))
    np.testing.assert_array_equal(g_frozen["lm_head"]["w"], 2 * params["lm_head"]["w"])
    np.testing.assert_array_equal(g_free["wav2vec2"]["encoder"]["w"], 2 * params["wav2vec2"]["encoder"]["w"])


@pytest.mark.parametrize("headless", [False, True])
def test_restore_init_params_takes_encoder_and_keeps_new_head(tmp_path, headless):
    from xlsr_jax import pretrained
    from xlsr_jax.models import Wav2Vec2ForCTC, Wav2Vec2ForPreTraining, Wav2Vec2Model, get_preset

    cfg = get_preset("tiny", vocab_size=12)
    audio = jnp.zeros((1, 4000))
    pre_model = Wav2Vec2Model(cfg) if headless else Wav2Vec2ForPreTraining(cfg)
    rngs = {"params": jax.random.PRNGKey(1), "mask": jax.random.PRNGKey(2), "gumbel": jax.random.PRNGKey(3)}
    saved = nn.unbox(pre_model.init(rngs, audio, None, deterministic=True)["params"])
    arch = "Wav2Vec2Model" if headless else "Wav2Vec2ForPreTraining"
    ckpt = pretrained.save_pretrained(tmp_path / "pre", saved, cfg, arch)

    ctc = Wav2Vec2ForCTC(cfg)
    fresh = nn.unbox(ctc.init({"params": jax.random.PRNGKey(7), "mask": jax.random.PRNGKey(8)}, audio, None)["params"])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh)
    restored = finetune.restore_init_params(ckpt, abstract, fresh)
    encoder = saved if headless else saved["wav2vec2"]
    jax.tree.map(np.testing.assert_array_equal, restored["wav2vec2"], encoder)
    jax.tree.map(np.testing.assert_array_equal, restored["lm_head"], fresh["lm_head"])


def test_restore_init_params_names_a_mismatch(tmp_path):
    from xlsr_jax import pretrained
    from xlsr_jax.models import Wav2Vec2ForCTC, Wav2Vec2Model, get_preset

    small, big = get_preset("tiny"), get_preset("tiny", hidden_size=96)
    audio = jnp.zeros((1, 4000))
    saved = nn.unbox(Wav2Vec2Model(small).init(jax.random.PRNGKey(0), audio, None)["params"])
    ckpt = pretrained.save_pretrained(tmp_path / "pre", saved, small, "Wav2Vec2Model")
    fresh = nn.unbox(Wav2Vec2ForCTC(big).init(jax.random.PRNGKey(0), audio, None)["params"])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), fresh)
    with pytest.raises(checkpointing.ModelMismatchError) as info:
        finetune.restore_init_params(ckpt, abstract, fresh, model_config=big.to_dict())
    text = str(info.value)
    # The differing config field, then every differing encoder parameter with both shapes.
    assert "model.hidden_size: checkpoint 64, this run 96" in text
    assert "encoder/layer_norm/scale: checkpoint (64,), model (96,)" in text
    assert len([line for line in text.splitlines() if ", model (" in line]) > 10
    # Asked for: the parameters that fit are restored, the others stay fresh (both logged).
    restored = finetune.restore_init_params(ckpt, abstract, fresh, allow_partial=True)
    np.testing.assert_array_equal(
        restored["wav2vec2"]["feature_extractor"]["conv_layers_0"]["conv"]["kernel"],
        saved["feature_extractor"]["conv_layers_0"]["conv"]["kernel"],
    )
    np.testing.assert_array_equal(
        restored["wav2vec2"]["encoder"]["layer_norm"]["scale"], fresh["wav2vec2"]["encoder"]["layer_norm"]["scale"]
    )


def test_error_counts_match_hand_counts():
    refs = ["el perro corre", "hola"]
    hyps = ["el pero core", ""]
    counts = decoding.error_counts(refs, hyps)
    # words: "perro"->"pero", "corre"->"core" substituted, "hola" deleted: 3 of 4.
    assert (counts.word_errors, counts.words) == (3, 4)
    # chars: two deletions ("r", "r") + 4 deleted chars of "hola", over 14 + 4 characters.
    assert (counts.char_errors, counts.chars) == (6, 18)
    by_lang = decoding.error_rates_by_language(refs + ["abc"], hyps + ["abc"], ["es", "es", "sw"])
    assert by_lang["sw"].cer == 0.0
    assert by_lang["all"].chars == 21 and by_lang["all"].char_errors == 6
    assert decoding.error_counts([""], ["x"]).utterances == 0  # empty references are left out


def test_greedy_decoding_collapses_repeats_and_blanks():
    from data_pipelines import Vocabulary

    vocab = Vocabulary(["<pad>", "<s>", "</s>", "<unk>", "|", "a", "b"])
    logits = np.full((1, 9, 7), -5.0, np.float32)
    for t, i in enumerate([5, 5, 0, 5, 4, 6, 6, 0, 6]):  # a a _ a | b b _ b  (last frame padded)
        logits[0, t, i] = 5.0
    padding = np.zeros((1, 9), bool)
    padding[0, -1] = True
    ids = decoding.greedy_ids(jnp.asarray(logits), jnp.asarray(padding))
    assert decoding.greedy_decode(np.asarray(ids), vocab) == ["aa b"]


def test_finetune_configs_build():
    from configs.finetune import common_voice, demo_ctc, demo_lid, mls

    ctc = demo_ctc.get_config("langs=es+sw,steps=10")
    assert ctc.task == "ctc" and ctc.model.feature_grad_mult == 0.0 and ctc.optim.schedule == "tri_stage"
    assert ctc.model.vocab_size == 0 and ctc.finetune.freeze_finetune_updates == 1  # no corpus read
    from xlsr_jax import tasks

    task = tasks.create_task(ctc)  # the vocabulary (read from the corpus) sizes the head here
    assert task.model_config.vocab_size == len(task.vocabulary) > 5
    lid = demo_lid.get_config("langs=es+sw+ar")
    assert lid.task == "lid" and lid.model.num_labels == 3
    cv = common_voice.get_config("lang=sw")
    assert cv.optim.lr == 1e-4 and cv.finetune.freeze_finetune_updates == 10000 and cv.model.hidden_size == 1024
    assert mls.get_config().model.mask_feature_prob == 0.5


def test_ctc_report_with_all_empty_references_warns_instead_of_nan(caplog):
    """An upper-case vocabulary under the lower-casing normaliser: every label is <unk> (id 3),
    which decodes to nothing. The report must say so, not carry WER NaN."""
    from data_pipelines import Vocabulary
    from xlsr_jax.tasks import ctc

    vocab = Vocabulary(["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B"])
    batch = {
        "labels": np.array([[3, 3, 4, 3], [3, 0, 0, 0], [5, 4, 6, 0]], np.int32),
        "label_padding": np.array([[0, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 1]], bool),
        "language": np.array([0, 0, 1], np.int32),
    }
    out = {"ids": np.array([[5, 0, 6], [5, 5, 0], [5, 4, 6]], np.int32)}
    with caplog.at_level("WARNING", logger=ctc.log.name):
        report = ctc.ctc_report([(batch, out)], vocab, ["en", "sw"])
    assert report["metrics"] == {"wer": 0.0, "cer": 0.0, "wer/sw": 0.0, "cer/sw": 0.0}  # en left out
    assert "all 2 references of language(s) en are empty" in caplog.text
    caplog.clear()
    only_en = {k: v[:2] for k, v in batch.items()}
    with caplog.at_level("WARNING", logger=ctc.log.name):
        report = ctc.ctc_report([(only_en, {"ids": out["ids"][:2]})], vocab, ["en", "sw"])
    assert report["metrics"] == {} and not any(np.isnan(v) for v in report["metrics"].values())
    assert "all 2 references of every language are empty" in caplog.text and "data.vocabulary.path" in caplog.text


@pytest.mark.integration
def test_train_stops_before_training_when_the_vocabulary_disagrees_with_the_normaliser(tmp_path):
    """The issue's case through train.py: an upper-case vocab.json and the default lower-casing
    normaliser. The run stops in one line naming the options, before any step."""
    import os
    import subprocess
    import sys

    import data_pipelines
    from data_pipelines import text
    from tests.trainer_testlib import REPO

    with open(os.path.join(data_pipelines.DEMO_CORPUS_DIR, "es", "train.tsv"), encoding="utf-8") as f:
        sentences = [line.rstrip("\n").split("\t")[2] for line in f][1:]
    chars = sorted({c for s in sentences for c in text.normalize_text(s, "es").upper().replace(" ", "")})
    vocab = text.Vocabulary([*text.SPECIAL_TOKENS, text.WORD_DELIMITER, *chars])
    (tmp_path / "vocab.json").write_text(vocab.to_json(), encoding="utf-8")
    cmd = [
        sys.executable,
        "train.py",
        "--config",
        "configs/finetune/demo_ctc.py:steps=2,langs=es",
        f"--config.data.vocabulary.path={tmp_path / 'vocab.json'}",
        f"--config.model.vocab_size={len(vocab)}",
        "--workdir",
        str(tmp_path / "run"),
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "become <unk>" in last and "data.vocabulary.max_unk_rate" in last
    assert "data.text.per_language" in last and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / "1")
