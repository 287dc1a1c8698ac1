"""Generation inside jit: identical token ids to transformers' generate (greedy and beam search).

Tiny random SpeechEncoderDecoderModels (tests/st_testlib.py); EOS is set to a token the model
actually produces early, so that finished hypotheses, padding and length penalties all matter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.convert_testlib import audio_batch
from tests.st_testlib import hf_model, hf_to_ours
from xlsr_jax import generation
from xlsr_jax.generation import GenerationConfig
from xlsr_jax.models.speech_translation import Wav2Vec2ForSpeechTranslation

torch = pytest.importorskip("torch", reason="parity tests need the torch extra: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers (the torch extra)")


def _models(seed):
    hf = hf_model(seed=seed, zero_encoder_bias=True)
    config, params = hf_to_ours(hf)
    audio, padding = audio_batch((1600, 1200, 900), seed=2)
    return hf, Wav2Vec2ForSpeechTranslation(config), params, audio, padding


@pytest.fixture(scope="module")
def models():
    return _models(5)


def _hf_generate(hf, audio, padding, gen: GenerationConfig):
    cfg = transformers.GenerationConfig(do_sample=False, **gen.to_hf())
    with torch.no_grad():
        out = hf.generate(
            input_values=torch.from_numpy(audio),
            attention_mask=torch.from_numpy(~padding).long(),
            generation_config=cfg,
        )
    return out.numpy()


def _ours(model, params, audio, padding, gen):
    out = generation.generate(model, params, jnp.asarray(audio), jnp.asarray(padding), gen)
    lengths = np.asarray(out.lengths)
    return np.asarray(out.sequences)[:, : lengths.max()], lengths


@pytest.mark.parametrize("seed,forced_bos", [(6, None), (5, 7)])
def test_greedy_matches_transformers(seed, forced_bos):
    hf, model, params, audio, padding = _models(seed)
    # EOS: the token greedy search emits fourth, so that hypotheses end before max_length.
    probe = _hf_generate(
        hf, audio, padding, GenerationConfig(max_length=6, eos_token_id=39, forced_bos_token_id=forced_bos)
    )
    gen = GenerationConfig(max_length=10, eos_token_id=int(probe[0, 4]), forced_bos_token_id=forced_bos)
    ours, lengths = _ours(model, params, audio, padding, gen)
    np.testing.assert_array_equal(ours, _hf_generate(hf, audio, padding, gen))
    # Forced EOS at the last position instead (HF MBart's default forced_eos_token_id).
    gen = GenerationConfig(max_length=7, eos_token_id=39, forced_eos_token_id=39, forced_bos_token_id=forced_bos)
    forced, forced_lengths = _ours(model, params, audio, padding, gen)
    np.testing.assert_array_equal(forced, _hf_generate(hf, audio, padding, gen))
    assert (forced[:, -1] == 39).all() and (forced_lengths == 7).all()
    assert lengths.max() < 10, "no hypothesis reached EOS: the test would not see EOS handling"


@pytest.mark.parametrize(
    "beams,length_penalty,early_stopping,forced_bos",
    [(3, 1.0, False, None), (4, 0.5, True, None), (2, 2.0, "never", 7), (3, -1.0, False, 7)],
)
def test_beam_search_matches_transformers(models, beams, length_penalty, early_stopping, forced_bos):
    hf, model, params, audio, padding = models
    # EOS 15: a token these utterances' beams reach at different steps (rows differ).
    gen = GenerationConfig(
        max_length=9,
        num_beams=beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        eos_token_id=15,
        forced_bos_token_id=forced_bos,
    )
    ours, lengths = _ours(model, params, audio, padding, gen)
    np.testing.assert_array_equal(ours, _hf_generate(hf, audio, padding, gen))


def test_generation_compiles_once_per_shape_and_stays_on_device(models):
    _, model, params, audio, padding = models
    gen = GenerationConfig(max_length=6, num_beams=2)
    params, padding = jax.device_put((params, jnp.asarray(padding)))
    batches = [jax.device_put(jnp.asarray(audio) * scale) for scale in (1.0, 0.5, 2.0)]
    before = generation.generate._cache_size()
    with jax.transfer_guard("disallow"):  # nothing goes to or from the host between tokens
        for batch in batches:  # new audio, same shapes: one compilation
            jax.block_until_ready(generation.generate(model, params, batch, padding, gen))
    assert generation.generate._cache_size() == before + 1
