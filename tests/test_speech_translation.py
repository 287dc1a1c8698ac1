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
