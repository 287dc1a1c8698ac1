"""Speech translation model: parity with transformers' SpeechEncoderDecoderModel.

Random-init tiny transformers models (Wav2Vec2Model with its conv adapter + MBartForCausalLM)
are converted with `xlsr_jax.convert.speech_translation` and run on the same audio and target
prefix: the adapter's output (the encoder states the decoder attends to) and the teacher-forced
logits must agree to 1e-4 on valid frames/positions, and the cached step-by-step decoder must
give the teacher-forced logits again.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.convert_testlib import audio_batch, max_abs_diff
from tests.st_testlib import hf_model, hf_to_ours, target_batch
from xlsr_jax.models.speech_translation import Wav2Vec2ForSpeechTranslation

torch = pytest.importorskip("torch", reason="parity tests need the torch extra: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers (the torch extra)")


TOL = 1e-4


@pytest.mark.parametrize("proj", ["adapter_proj", "enc_to_dec_proj"])
def test_encoder_and_teacher_forced_logits_match_transformers(proj):
    hf = hf_model(output_hidden_size=24 if proj == "adapter_proj" else 32)
    assert hasattr(hf, "enc_to_dec_proj") == (proj == "enc_to_dec_proj")
    config, params = hf_to_ours(hf)
    audio, padding = audio_batch((1600, 1100))
    ids = target_batch()
    with torch.no_grad():
        out = hf(
            input_values=torch.from_numpy(audio),
            attention_mask=torch.from_numpy(~padding).long(),
            decoder_input_ids=torch.from_numpy(ids),
        )
    model = Wav2Vec2ForSpeechTranslation(config)
    variables = {"params": params}
    hidden, frame_padding = model.apply(variables, jnp.asarray(audio), jnp.asarray(padding), method="encode")
    hf_hidden = out.encoder_last_hidden_state.numpy()
    assert hidden.shape == hf_hidden.shape
    # HF's encoder mask for the decoder, rebuilt as it does (feature-vector lengths with adapter).
    hf_valid = hf.encoder._get_feature_vector_attention_mask(hf_hidden.shape[1], torch.from_numpy(~padding).long())
    np.testing.assert_array_equal(~np.asarray(frame_padding), hf_valid.numpy().astype(bool))
    assert max_abs_diff(hidden, hf_hidden, ~np.asarray(frame_padding)) < TOL
    logits = model.apply(variables, jnp.asarray(audio), jnp.asarray(padding), jnp.asarray(ids))
    valid = ids != 1
    assert max_abs_diff(logits, out.logits.numpy(), valid) < TOL


def test_cached_decoding_reproduces_teacher_forcing():
    hf = hf_model(seed=3)
    config, params = hf_to_ours(hf)
    model = Wav2Vec2ForSpeechTranslation(config)
    variables = {"params": params}
    audio, padding = audio_batch((1600, 1300), seed=1)
    ids = jnp.asarray(target_batch(length=6, seed=1))
    full = model.apply(variables, jnp.asarray(audio), jnp.asarray(padding), ids)
    hidden, frame_padding = model.apply(variables, jnp.asarray(audio), jnp.asarray(padding), method="encode")
    cache = model.apply(variables, hidden, frame_padding, 10, method="init_cache")
    # One token, then two at once (a prefix), then one: the cache index advances by each width.
    steps = []
    for lo, hi in ((0, 1), (1, 3), (3, 4), (4, 5), (5, 6)):
        logits, cache = model.apply(variables, ids[:, lo:hi], cache, method="decode_step")
        steps.append(logits)
    assert int(cache.index) == 6
    assert max_abs_diff(jnp.concatenate(steps, axis=1), full) < TOL


def test_every_parameter_has_logical_axes_with_a_rule():
    from xlsr_jax import sharding
    from xlsr_jax.models.speech_translation import tiny_speech_translation_config

    for config in (tiny_speech_translation_config(), tiny_speech_translation_config(decoder_overrides={"d_model": 32})):
        model = Wav2Vec2ForSpeechTranslation(config)
        boxed = jax.eval_shape(
            lambda m=model: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 800)), None, jnp.zeros((1, 4), jnp.int32))
        )["params"]
        leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: hasattr(x, "names"))
        assert all(hasattr(leaf, "names") for leaf in leaves), "a parameter without logical axis names"
        used = sharding.logical_axes_used(boxed)
        known = {name for name, _ in sharding.logical_axis_rules()}
        assert used <= known, used - known


def test_label_smoothed_cross_entropy_matches_fairseq_formula():
    from xlsr_jax import losses

    rng = np.random.RandomState(0)
    logits = rng.standard_normal((2, 5, 7)).astype(np.float32)
    labels = rng.randint(0, 7, (2, 5))
    labels[1, 3:] = 1  # padding
    labels[0, 4] = -100  # HF's ignore index
    loss, nll, count = losses.label_smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), 1, 0.1)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = (labels != 1) & (labels >= 0)
    ref_nll = -np.take_along_axis(logp, np.where(valid, labels, 0)[..., None], -1)[..., 0]
    eps_i = 0.1 / 6
    ref = (1 - 0.1 - eps_i) * ref_nll - eps_i * logp.sum(-1)
    assert int(count) == valid.sum()
    np.testing.assert_allclose(float(nll), ref_nll[valid].sum(), rtol=1e-5)
    np.testing.assert_allclose(float(loss), ref[valid].sum(), rtol=1e-5)
    plain, _, _ = losses.label_smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), 1, 0.0)
    np.testing.assert_allclose(float(plain), ref_nll[valid].sum(), rtol=1e-5)


def test_bleu_and_chrf_per_pair():
    from xlsr_jax import decoding

    refs = ["the cat sat on the mat", "a dog ran in the park", "the cat sat on the mat"]
    hyps = ["the cat sat on the mat", "a dog ran in a park", "dog"]
    scores = decoding.translation_scores_by_pair(refs, hyps, ["es_en", "ru_en", "ru_en"])
    assert scores["es_en"]["bleu"] == pytest.approx(100.0) and scores["es_en"]["sentences"] == 1
    assert 0 < scores["ru_en"]["bleu"] < scores["all"]["bleu"] < 100
    assert 0 < scores["ru_en"]["chrf"] < 100 and scores["all"]["sentences"] == 3


def test_decoder_initialised_from_an_mbart_model_matches_it():
    """The paper's initialisation: the decoder of a (converted) mBART-50; here a tiny random one."""
    import transformers

    from tests.st_testlib import TINY_MBART
    from xlsr_jax.convert import speech_translation as st
    from xlsr_jax.models.decoder import Decoder

    torch.manual_seed(0)
    hf = transformers.MBartForConditionalGeneration(
        transformers.MBartConfig(**TINY_MBART, encoder_layers=1, encoder_attention_heads=3, encoder_ffn_dim=8)
    ).eval()
    config = st.mbart_decoder_config(hf.config.to_dict())
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    params = st.mbart_decoder_params(state, config)
    rng = np.random.RandomState(0)
    encoder_hidden = rng.standard_normal((2, 5, config.d_model)).astype(np.float32)
    ids = target_batch()
    with torch.no_grad():
        out = hf.model.decoder(input_ids=torch.from_numpy(ids), encoder_hidden_states=torch.from_numpy(encoder_hidden))
        expected = (hf.lm_head(out.last_hidden_state) + hf.final_logits_bias).numpy()
    ours = Decoder(config).apply({"params": params}, jnp.asarray(ids), jnp.asarray(encoder_hidden), None)
    assert max_abs_diff(ours, expected) < TOL
