"""Presets: published sizes, parameter counts, serialisation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xlsr_jax.models import PRESET_NAMES, PUBLISHED_PARAMETERS, Wav2Vec2Config, Wav2Vec2ForPreTraining, get_preset


def count_parameters(cfg: Wav2Vec2Config) -> int:
    model = Wav2Vec2ForPreTraining(cfg)
    rngs = {"params": jax.random.key(0), "mask": jax.random.key(1)}
    shapes = jax.eval_shape(lambda: model.init(rngs, jnp.zeros((1, 16000)), deterministic=True))
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)))


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_parameter_count_matches_published_figure(name):
    # eval_shape allocates nothing, so even the 2B model is checked in well under a second.
    n = count_parameters(get_preset(name, scan_layers=True))
    assert abs(n / PUBLISHED_PARAMETERS[name] - 1) < 0.01, (name, n)


def test_scanned_and_unscanned_have_the_same_size():
    cfg = get_preset("base")
    assert count_parameters(cfg) == count_parameters(dataclasses.replace(cfg, scan_layers=True))


@pytest.mark.parametrize(
    "name,layers,width,ffn,heads",
    [
        ("base", 12, 768, 3072, 12),
        ("large", 24, 1024, 4096, 16),
        ("xls_r_1b", 48, 1280, 5120, 16),
        ("xls_r_2b", 48, 1920, 7680, 16),
    ],
)
def test_presets_have_published_shapes(name, layers, width, ffn, heads):
    cfg = get_preset(name)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads) == (
        layers,
        width,
        ffn,
        heads,
    )
    assert cfg.conv_kernel == (10, 3, 3, 3, 3, 2, 2) and cfg.conv_stride == (5, 2, 2, 2, 2, 2, 2)
    assert cfg.num_codevector_groups * cfg.num_codevectors_per_group == 640


def test_large_presets_use_xls_r_flags_and_base_uses_fairseq_base_flags():
    base, large = get_preset("base"), get_preset("large")
    assert (base.feat_extract_norm, base.conv_bias, base.do_stable_layer_norm) == ("group", False, False)
    assert (base.feature_penalty_weight, base.feature_grad_mult) == (10.0, 0.1)
    assert (large.feat_extract_norm, large.conv_bias, large.do_stable_layer_norm) == ("layer", True, True)
    assert (large.feature_penalty_weight, large.feature_grad_mult) == (0.0, 1.0)
    assert large.codevector_dim == 768 and get_preset("xls_r_1b").codevector_dim == 1024


def test_config_round_trips_through_json():
    for name in PRESET_NAMES:
        cfg = get_preset(name)
        assert Wav2Vec2Config.from_json(cfg.to_json()) == cfg


def test_config_rejects_unknown_fields_and_bad_values():
    with pytest.raises(ValueError, match="unknown"):
        Wav2Vec2Config.from_dict({"hidden_sise": 3})
    with pytest.raises(ValueError, match="feat_extract_norm"):
        Wav2Vec2Config(feat_extract_norm="batch")
    with pytest.raises(ValueError, match="unknown model preset"):
        get_preset("huge")


def test_feature_lengths_follow_the_conv_arithmetic():
    cfg = get_preset("base")
    # 1 s of 16 kHz audio gives 49 frames (20 ms hop, 25 ms receptive field), as fairseq.
    assert cfg.feature_lengths(16000) == 49
    assert cfg.feature_lengths(400) == 1 and cfg.feature_lengths(399) == 0
    np.testing.assert_array_equal(cfg.feature_lengths(np.array([16000, 32000])), [49, 99])
