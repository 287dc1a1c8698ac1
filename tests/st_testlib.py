"""Shared pieces of the speech-translation tests: tiny HF SpeechEncoderDecoderModels and ours."""

from __future__ import annotations

import numpy as np

from tests.convert_testlib import TINY_HF

# Decoder twin of convert_testlib.TINY_HF: mBART's structure (scaled embeddings, tied output),
# dropout non-zero so that eval mode must switch it off on both sides.
TINY_MBART = {
    "vocab_size": 40,
    "d_model": 24,
    "decoder_layers": 2,
    "decoder_attention_heads": 3,
    "decoder_ffn_dim": 36,
    "max_position_embeddings": 20,
    "scale_embedding": True,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.1,
}


def hf_model(seed=0, output_hidden_size=24, tie=True, zero_encoder_bias=False, **encoder_overrides):
    """A random-init transformers SpeechEncoderDecoderModel (Wav2Vec2 + adapter, mBART), eval mode.

    output_hidden_size == d_model (as the released models): no enc_to_dec_proj; set it to the
    encoder width (32) to get HF's enc_to_dec_proj instead of the adapter's projection.
    zero_encoder_bias: with random biases the tiny encoder's output is nearly the same for every
    input, so generation would not depend on the audio; without them utterances differ.
    The model's generation_config is emptied: every search setting comes from the test.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    enc = {
        **TINY_HF,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
        "conv_bias": True,
        "add_adapter": True,
        "num_adapter_layers": 2,
        "output_hidden_size": output_hidden_size,
    }
    enc.update(encoder_overrides)
    dec = transformers.MBartConfig(
        **TINY_MBART, is_decoder=True, add_cross_attention=True, tie_word_embeddings=tie, decoder_start_token_id=2
    )
    model = transformers.SpeechEncoderDecoderModel(
        encoder=transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**enc)),
        decoder=transformers.MBartForCausalLM(dec),
    )
    model.config.decoder_start_token_id = 2
    model.config.pad_token_id = 1
    model.config.eos_token_id = 2
    # Random weights with O(1) activations everywhere (init_std 0.02 makes every logit ~0).
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(np.prod(p.shape[1:])))
            elif "layer_norm" in name or "layernorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            if zero_encoder_bias and name.startswith("encoder.") and name.endswith("bias"):
                p.zero_()
    model.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=2, pad_token_id=1, eos_token_id=2, bos_token_id=0
    )
    return model.eval()


def hf_to_ours(model):
    """(our config, our params) for a transformers model, via the conversion functions."""
    from xlsr_jax.convert import speech_translation as st

    config, _ = st.hf_to_st_config(model.config.to_dict())
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return config, st.hf_state_to_st_params(state, config)


def target_batch(batch=2, length=7, vocab=40, seed=0):
    """int64 [batch, length] decoder inputs starting with 2, the second row padded (1) at the end."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, vocab, size=(batch, length))
    ids[:, 0] = 2
    ids[1, length - 2 :] = 1
    return ids


def demo_tokenizer_bytes(vocab_size=120) -> bytes:
    """A sentencepiece model trained on the demo corpus's English translations."""
    from data_pipelines import translation
    from data_pipelines.demo_sentences import TRANSLATIONS_EN

    return translation.train_sentencepiece([t for ts in TRANSLATIONS_EN.values() for t in ts], vocab_size)


def tiny_translation_export(directory, seed=0, generation=None):
    """An exported tiny translation checkpoint (random weights) with the demo tokenizer."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from data_pipelines import translation
    from xlsr_jax import pretrained
    from xlsr_jax.models.speech_translation import Wav2Vec2ForSpeechTranslation, tiny_speech_translation_config

    spm = demo_tokenizer_bytes()
    vocab = translation.TargetTokenizer(spm).vocab_size
    config = tiny_speech_translation_config(decoder_overrides={"vocab_size": vocab})
    model = Wav2Vec2ForSpeechTranslation(config)
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 800)), None, jnp.zeros((1, 3), jnp.int32))["params"]
    return pretrained.save_pretrained(
        directory,
        nn.meta.unbox(params),
        config,
        "Wav2Vec2ForSpeechTranslation",
        generation=generation,
        tokenizer_files={"sentencepiece.bpe.model": spm},
    )
