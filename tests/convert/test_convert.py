"""Conversion tables, config mapping and the exported-checkpoint format (no torch needed)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.convert_testlib import TINY_HF
from xlsr_jax import models, pretrained
from xlsr_jax.convert import configs, hf_to_params, orbax_to_hf, params_to_hf, tables
from xlsr_jax.convert import params as params_lib
from xlsr_jax.convert.params import CheckpointMismatchError
from xlsr_jax.models import Wav2Vec2Config
from xlsr_jax.models.transformer import restack_layers

ARCHS = ("Wav2Vec2ForPreTraining", "Wav2Vec2Model", "Wav2Vec2ForCTC", "Wav2Vec2ForSequenceClassification")


def tiny_config(**overrides) -> Wav2Vec2Config:
    """The parity tests' tiny model (convert_testlib.TINY_HF) with the XLS-R extractor and LN placement."""
    values = {**TINY_HF, "conv_bias": True, "feat_extract_norm": "layer", "do_stable_layer_norm": True}
    return Wav2Vec2Config(**{**values, **overrides})


def param_shapes(config: Wav2Vec2Config, arch: str):
    """Our model's parameter shapes, by tracing init (no compilation)."""
    model = models.model_class(arch)(config)
    shapes = jax.eval_shape(
        lambda: model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 800)), None, deterministic=True)
    )
    return _unbox(shapes["params"])


def init_params(config: Wav2Vec2Config, arch: str, seed: int = 0):
    """Random float32 parameters with our model's tree and shapes (values distinct everywhere,
    so a wrong transpose or swapped tensor cannot go unnoticed)."""
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), param_shapes(config, arch))


def _unbox(tree):
    import flax.linen as nn

    return nn.meta.unbox(tree)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("scan", [False, True])
def test_table_covers_exactly_the_model_parameters(arch, scan):
    """Every parameter of our model has one HF row with the right shape, and nothing else."""
    cfg = tiny_config(scan_layers=scan, use_weighted_layer_sum=True)
    flat = params_lib.flatten(param_shapes(cfg, arch))
    rules = tables.hf_param_table(cfg, arch)
    ours = {}
    for r in rules:
        shape = ((cfg.num_hidden_layers,) + r.ours_shape) if (scan and r.layer is not None) else r.ours_shape
        ours[r.ours] = shape
    assert set(ours) == set(flat)
    assert {k: tuple(v.shape) for k, v in flat.items()} == ours
    assert len({r.hf for r in rules}) == len(rules)


@pytest.mark.parametrize("arch", ARCHS)
def test_params_hf_round_trip_is_exact(arch):
    cfg = tiny_config(use_weighted_layer_sum=True)
    params = init_params(cfg, arch)
    hf_config, state = params_to_hf(cfg, arch, params)
    cfg2, arch2, params2, _ = hf_to_params(hf_config, state)
    assert (cfg2, arch2) == (cfg, arch)
    jax.tree.map(np.testing.assert_array_equal, params2, params)
    # The scanned layout holds the same numbers stacked.
    scanned = dataclasses.replace(cfg, scan_layers=True)
    _, _, stacked, _ = hf_to_params(hf_config, state, scan_layers=True)
    restacked = restack_layers(params, cfg, True)
    jax.tree.map(np.testing.assert_array_equal, stacked, restacked)
    _, state2 = params_to_hf(scanned, arch, stacked)
    assert set(state2) == set(state)
    for k in state:
        np.testing.assert_array_equal(state2[k], state[k])


def test_layouts_of_attention_and_conv():
    """Torch Linear/Conv layouts map to ours as documented (checked on hand-made arrays)."""
    cfg = tiny_config()
    rules = {r.hf: r for r in tables.hf_param_table(cfg, "Wav2Vec2Model")}
    w = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)  # torch [out, in]
    q = rules["encoder.layers.0.attention.q_proj.weight"].transform.to_ours(w)  # [in, heads, head_dim]
    x = np.random.RandomState(0).randn(32).astype(np.float32)
    np.testing.assert_allclose(np.einsum("e,ehd->hd", x, q).reshape(-1), w @ x, rtol=1e-6)
    o = rules["encoder.layers.0.attention.out_proj.weight"].transform.to_ours(w)  # [heads, head_dim, out]
    np.testing.assert_allclose(np.einsum("hd,hde->e", x.reshape(4, 8), o), w @ x, rtol=1e-6)
    conv = np.random.RandomState(1).randn(24, 16, 3).astype(np.float32)  # torch [out, in, K]
    k = rules["feature_extractor.conv_layers.1.conv.weight"].transform.to_ours(conv)
    assert k.shape == (3, 16, 24) and k[2, 5, 7] == conv[7, 5, 2]


def test_mismatches_name_the_offending_keys():
    cfg = tiny_config()
    hf_config, state = params_to_hf(cfg, "Wav2Vec2ForCTC", init_params(cfg, "Wav2Vec2ForCTC"))
    broken = dict(state)
    del broken["wav2vec2.encoder.layers.1.final_layer_norm.bias"]
    broken["wav2vec2.encoder.layers.7.fc9.weight"] = np.zeros(3, np.float32)
    broken["lm_head.weight"] = np.zeros((11, 32), np.float32)
    with pytest.raises(CheckpointMismatchError) as e:
        hf_to_params(hf_config, broken)
    msg = str(e.value)
    assert "wav2vec2.encoder.layers.1.final_layer_norm.bias" in msg
    assert "wav2vec2.encoder.layers.7.fc9.weight" in msg
    assert "lm_head.weight: checkpoint (11, 32) vs config (10, 32)" in msg


def test_hf_config_mapping():
    cfg = tiny_config(dtype="bfloat16", scan_layers=True, feature_penalty_weight=3.0)
    hf = configs.config_to_hf(cfg, "Wav2Vec2ForPreTraining", {"bos_token_id": 5})
    assert hf["architectures"] == ["Wav2Vec2ForPreTraining"] and hf["model_type"] == "wav2vec2"
    assert hf["bos_token_id"] == 5 and hf["num_feat_extract_layers"] == 3
    assert "dtype" not in hf and hf["xlsr_jax"]["dtype"] == "bfloat16"  # HF's dtype means torch dtype
    back, arch, extras = configs.hf_to_config(json.loads(json.dumps(hf)))
    assert back == cfg and arch == "Wav2Vec2ForPreTraining" and extras["bos_token_id"] == 5
    # transformers 5 writes only non-default fields: absent ones take HF's defaults, not ours.
    sparse, _, _ = configs.hf_to_config(
        {"model_type": "wav2vec2", "hidden_size": 64, "num_attention_heads": 4, "architectures": ["Wav2Vec2ForCTC"]}
    )
    assert sparse.mask_time_prob == 0.05 and sparse.layerdrop == 0.1 and sparse.num_hidden_layers == 12
    assert sparse.activation_dropout == 0.1  # HF default; ours is 0.0
    # HF's apply_spec_augment=False is masking off.
    off, _, _ = configs.hf_to_config({"apply_spec_augment": False, "mask_time_prob": 0.5})
    assert off.mask_time_prob == 0.0
    # The speech-translation adapter maps field by field; HF's resolved width equal to
    # hidden_size reads back as ours "same as hidden_size".
    adapter, _, _ = configs.hf_to_config({"add_adapter": True, "output_hidden_size": 768, "adapter_stride": 3})
    assert adapter.add_adapter and adapter.output_hidden_size is None and adapter.adapter_stride == 3
    assert configs.config_to_hf(adapter, "Wav2Vec2Model")["output_hidden_size"] == 768
    with pytest.raises(configs.ConfigError, match="Wav2Vec2ForXVector"):
        configs.hf_to_config({"architectures": ["Wav2Vec2ForXVector"]})
    with pytest.raises(configs.ConfigError, match="model_type"):
        configs.hf_to_config({"model_type": "hubert"})


def test_conv_feature_layers_parser_is_safe():
    spec = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"
    assert configs.parse_conv_feature_layers(spec) == [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    with pytest.raises(configs.ConfigError):
        configs.parse_conv_feature_layers("__import__('os').system('true')")


XLSR_MODEL_CFG = {
    "_name": "wav2vec2",
    "extractor_mode": "layer_norm",
    "encoder_layers": 24,
    "encoder_embed_dim": 1024,
    "encoder_ffn_embed_dim": 4096,
    "encoder_attention_heads": 16,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "dropout_features": 0.0,
    "final_dim": 768,
    "layer_norm_first": True,
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]",
    "conv_bias": True,
    "logit_temp": 0.1,
    "quantize_targets": True,
    "quantize_input": False,
    "same_quantizer": False,
    "target_glu": False,
    "feature_grad_mult": 1.0,
    "quantizer_depth": 1,
    "latent_vars": 320,
    "latent_groups": 2,
    "latent_dim": 0,
    "mask_length": 10,
    "mask_prob": 0.65,
    "mask_channel_prob": 0.0,
    "mask_channel_length": 10,
    "num_negatives": 100,
    "negatives_from_everywhere": False,
    "cross_sample_negatives": 0,
    "codebook_negatives": 0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "pos_conv_depth": 1,
    "latent_temp": [2.0, 0.1, 0.999995],
}


def test_fairseq_config_mapping_xlsr():
    """The published XLSR-53 / XLS-R 300M pretraining config gives the `large` preset's shape."""
    from xlsr_jax.models import get_preset

    hf = configs.fairseq_to_hf_config({"model": XLSR_MODEL_CFG, "criterion": {"loss_weights": [0.1, 0.0]}})
    cfg, arch, _ = configs.hf_to_config(hf)
    large = get_preset("large")
    assert arch == "Wav2Vec2ForPreTraining"
    for field in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "conv_dim",
        "conv_kernel",
        "conv_stride",
        "conv_bias",
        "feat_extract_norm",
        "do_stable_layer_norm",
        "codevector_dim",
        "proj_codevector_dim",
        "num_codevectors_per_group",
        "num_codevector_groups",
        "num_conv_pos_embeddings",
        "num_conv_pos_embedding_groups",
        "feature_penalty_weight",
    ):
        assert getattr(cfg, field) == getattr(large, field), field
    # CTC fine-tuning: the pretraining config is nested in w2v_args, fine-tuning fields override.
    ctc = {
        "_name": "wav2vec_ctc",
        "w2v_args": {"model": XLSR_MODEL_CFG},
        "dropout": 0.0,
        "activation_dropout": 0.05,
        "attention_dropout": 0.0,
        "dropout_input": 0.0,
        "mask_prob": 0.75,
        "mask_length": 10,
        "mask_channel_prob": 0.25,
        "mask_channel_length": 64,
        "layerdrop": 0.1,
        "feature_grad_mult": 0.0,
        "final_dropout": 0.0,
    }
    hf = configs.fairseq_to_hf_config({"model": ctc}, vocab_size=32)
    cfg, arch, _ = configs.hf_to_config(hf)
    assert arch == "Wav2Vec2ForCTC" and cfg.vocab_size == 32 and cfg.pad_token_id == 0
    assert (cfg.mask_time_prob, cfg.mask_feature_prob, cfg.mask_feature_length) == (0.75, 0.25, 64)
    assert (cfg.layerdrop, cfg.activation_dropout, cfg.feature_grad_mult) == (0.1, 0.05, 0.0)
    with pytest.raises(configs.ConfigError, match="w2v_path"):
        configs.fairseq_to_hf_config({"model": {**ctc, "w2v_args": None, "w2v_path": "/x.pt"}}, vocab_size=32)
    with pytest.raises(configs.ConfigError, match="conformer"):
        configs.fairseq_to_hf_config({"model": {**XLSR_MODEL_CFG, "layer_type": "conformer"}})


def test_exported_checkpoint_round_trip_and_restack(tmp_path):
    cfg = tiny_config()
    params = init_params(cfg, "Wav2Vec2ForCTC")
    vocab = {f"t{i}": i for i in range(cfg.vocab_size)}
    path = pretrained.save_pretrained(
        tmp_path / "ckpt", params, cfg, "Wav2Vec2ForCTC", vocab=vocab, hf_extras={"bos_token_id": 1}
    )
    loaded = pretrained.load_pretrained(path)
    assert loaded.config == cfg and loaded.architecture == "Wav2Vec2ForCTC" and loaded.vocab == vocab
    jax.tree.map(np.testing.assert_array_equal, loaded.params, params)
    scanned = pretrained.load_pretrained(path, config_overrides={"scan_layers": True})
    assert scanned.config.scan_layers
    assert scanned.params["wav2vec2"]["encoder"]["layers"]["final_layer_norm"]["scale"].shape == (2, 32)
    with pytest.raises(FileExistsError):
        pretrained.save_pretrained(path, params, cfg, "Wav2Vec2ForCTC")
    with pytest.raises(FileNotFoundError, match="model.json"):
        pretrained.load_pretrained(tmp_path)


def test_failed_write_leaves_nothing(tmp_path):
    cfg = tiny_config()
    params = init_params(cfg, "Wav2Vec2Model")
    params["encoder"]["layers_0"]["layer_norm"]["scale"] = np.zeros(5, np.float32)  # wrong shape
    path = pretrained.save_pretrained(tmp_path / "ckpt", params, cfg, "Wav2Vec2Model")
    with pytest.raises(CheckpointMismatchError, match="layers_0/layer_norm/scale"):
        orbax_to_hf(path, tmp_path / "hf")
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no half-written folder, no temp dir


def test_orbax_to_hf_writes_safetensors_without_torch(tmp_path):
    """Exporting must not import torch (the torch extra is optional)."""
    cfg = tiny_config()
    path = pretrained.save_pretrained(
        tmp_path / "ckpt", init_params(cfg, "Wav2Vec2ForPreTraining"), cfg, "Wav2Vec2ForPreTraining"
    )
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from xlsr_jax.convert import orbax_to_hf\n"
        f"orbax_to_hf({str(path)!r}, {str(tmp_path / 'hf')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    from safetensors.numpy import load_file

    state = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original1" in state


def test_training_checkpoint_loads_and_exports(tmp_path):
    """A training run's checkpoint (xlsr_jax.checkpointing layout) is accepted by the loader."""
    from xlsr_jax import checkpointing

    cfg = tiny_config()
    params = init_params(cfg, "Wav2Vec2ForCTC", seed=3)
    manager = checkpointing.CheckpointManager(
        str(tmp_path / "checkpoints"), save_every_steps=1, keep=1, async_save=False
    )
    run_config = {"task": "ctc", "model": cfg.to_dict(), "data": {"normalize": False}}
    manager.save(7, params, {"step": np.int32(7)}, config=run_config, data_state={}, force=True)
    manager.close()
    loaded = pretrained.load_pretrained(tmp_path / "checkpoints")
    assert loaded.architecture == "Wav2Vec2ForCTC" and loaded.config == cfg
    assert loaded.audio["do_normalize"] is False
    jax.tree.map(np.testing.assert_array_equal, loaded.params, params)
    vocab = {f"t{i}": i for i in range(cfg.vocab_size)}
    out = orbax_to_hf(tmp_path / "checkpoints" / "7", tmp_path / "hf", vocab=vocab)
    assert sorted(os.listdir(out)) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
        "vocab.json",
    ]


def test_language_id_run_exports_its_language_names(tmp_path):
    """`orbax-to-hf` on a language-ID run names the classes by the run's data.languages (no --labels)."""
    from xlsr_jax import checkpointing
    from xlsr_jax.convert.__main__ import main as cli

    languages = ["ar", "es", "zh-CN"]
    cfg = tiny_config(num_labels=len(languages))
    params = init_params(cfg, "Wav2Vec2ForSequenceClassification", seed=4)
    manager = checkpointing.CheckpointManager(
        str(tmp_path / "checkpoints"), save_every_steps=1, keep=1, async_save=False
    )
    run_config = {"task": "lid", "model": cfg.to_dict(), "data": {"languages": languages}}
    manager.save(5, params, {"step": np.int32(5)}, config=run_config, data_state={}, force=True)
    manager.close()
    assert cli(["orbax-to-hf", str(tmp_path / "checkpoints"), str(tmp_path / "hf")]) == 0
    with open(tmp_path / "hf" / "config.json", encoding="utf-8") as f:
        hf = json.load(f)
    assert hf["id2label"] == {"0": "ar", "1": "es", "2": "zh-CN"}
    assert hf["label2id"] == {"ar": 0, "es": 1, "zh-CN": 2}
    # An explicit --labels still wins.
    (tmp_path / "labels.json").write_text(json.dumps(["x", "y", "z"]))
    args = [
        "orbax-to-hf",
        str(tmp_path / "checkpoints"),
        str(tmp_path / "hf2"),
        "--labels",
        str(tmp_path / "labels.json"),
    ]
    assert cli(args) == 0
    with open(tmp_path / "hf2" / "config.json", encoding="utf-8") as f:
        assert json.load(f)["id2label"] == {"0": "x", "1": "y", "2": "z"}
    transformers = pytest.importorskip("transformers", reason="reads the export with transformers")
    assert transformers.AutoConfig.from_pretrained(tmp_path / "hf").id2label == {0: "ar", 1: "es", 2: "zh-CN"}


def test_masking_off_drops_and_refills_masked_spec_embed():
    """HF has no masked_spec_embed when masking is off; ours always does (then unused)."""
    cfg = tiny_config(mask_time_prob=0.0, mask_feature_prob=0.0)
    params = init_params(cfg, "Wav2Vec2ForCTC", seed=5)
    hf_config, state = params_to_hf(cfg, "Wav2Vec2ForCTC", params)
    assert not any("masked_spec_embed" in k for k in state)
    cfg2, _, params2, _ = hf_to_params(hf_config, state)
    assert cfg2 == cfg
    np.testing.assert_array_equal(params2["wav2vec2"]["masked_spec_embed"], np.zeros(32, np.float32))
    params2["wav2vec2"]["masked_spec_embed"] = params["wav2vec2"]["masked_spec_embed"]
    jax.tree.map(np.testing.assert_array_equal, params2, params)
