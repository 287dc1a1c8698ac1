"""Translation checkpoints through the `xlsr_jax.convert` CLI, both directions.

HF -> ours: a random tiny `SpeechEncoderDecoderModel` folder (with a sentencepiece tokenizer and
a generation_config.json) converted by `python -m xlsr_jax.convert hf-to-orbax` gives the same
teacher-forced logits (1e-4) and carries the generation settings and tokenizer files.
Ours -> HF: `orbax-to-hf` writes a folder that transformers loads with no missing/unexpected
keys and the same logits; converting it back gives the identical parameters.
"""

from __future__ import annotations

import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.convert_testlib import audio_batch, max_abs_diff
from tests.st_testlib import hf_model, target_batch
from xlsr_jax import pretrained
from xlsr_jax.convert import params as params_lib
from xlsr_jax.convert.__main__ import main as convert_main
from xlsr_jax.models.speech_translation import Wav2Vec2ForSpeechTranslation

torch = pytest.importorskip("torch", reason="conversion parity needs the torch extra: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="conversion parity needs transformers (the torch extra)")
spm = pytest.importorskip("sentencepiece", reason="needs the translation extra: pip install -e '.[translation]'")

TOL = 1e-4


def _sentencepiece_model() -> bytes:
    out = io.BytesIO()
    sentences = ["the cat sat on the mat", "a dog ran in the park", "we translate speech to text"] * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=out, vocab_size=30, model_type="bpe", minloglevel=2
    )
    return out.getvalue()


def _hf_logits(model, audio, padding, ids):
    with torch.no_grad():
        return model(
            input_values=torch.from_numpy(audio),
            attention_mask=torch.from_numpy(~padding).long(),
            decoder_input_ids=torch.from_numpy(ids),
        ).logits.numpy()


def _our_logits(loaded, audio, padding, ids):
    model = Wav2Vec2ForSpeechTranslation(loaded.config)
    return model.apply({"params": loaded.params}, jnp.asarray(audio), jnp.asarray(padding), jnp.asarray(ids))


def test_hf_folder_to_ours_and_back(tmp_path, capsys):
    hf = hf_model(seed=1)
    hf.save_pretrained(tmp_path / "hf")
    spm_bytes = _sentencepiece_model()
    (tmp_path / "hf" / "sentencepiece.bpe.model").write_bytes(spm_bytes)
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MBart50Tokenizer"}))
    generation = {"decoder_start_token_id": 2, "forced_bos_token_id": 7, "num_beams": 5, "max_length": 18}
    (tmp_path / "hf" / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": 2}))

    assert convert_main(["hf-to-orbax", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 0
    loaded = pretrained.load_pretrained(tmp_path / "ours")
    assert loaded.architecture == "Wav2Vec2ForSpeechTranslation"
    assert {k: loaded.generation[k] for k in generation} == generation
    with open(os.path.join(loaded.tokenizer_dir, "sentencepiece.bpe.model"), "rb") as f:
        assert f.read() == spm_bytes
    audio, padding = audio_batch((1600, 1100))
    ids = target_batch()
    valid = ids != 1
    assert max_abs_diff(_our_logits(loaded, audio, padding, ids), _hf_logits(hf, audio, padding, ids), valid) < TOL

    # ...and back: the same weights, settings and tokenizer in the new transformers folder.
    assert convert_main(["orbax-to-hf", str(tmp_path / "ours"), str(tmp_path / "back")]) == 0
    back = transformers.SpeechEncoderDecoderModel.from_pretrained(tmp_path / "back").eval()
    assert max_abs_diff(_hf_logits(back, audio, padding, ids), _hf_logits(hf, audio, padding, ids), valid) < TOL
    gen = transformers.GenerationConfig.from_pretrained(tmp_path / "back")
    assert (gen.forced_bos_token_id, gen.num_beams, gen.max_length) == (7, 5, 18)
    assert (tmp_path / "back" / "sentencepiece.bpe.model").read_bytes() == spm_bytes
    capsys.readouterr()


def test_our_checkpoint_to_hf_and_back(tmp_path):
    from tests.convert_testlib import random_params
    from xlsr_jax.models.speech_translation import tiny_speech_translation_config

    # No adapter projection, and a decoder narrower than the encoder: HF's enc_to_dec_proj.
    config = tiny_speech_translation_config({"output_hidden_size": None}, {"d_model": 32})
    model = Wav2Vec2ForSpeechTranslation(config)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 800)), None, jnp.zeros((1, 3), jnp.int32))
    )
    import flax.linen as nn

    params = random_params(nn.meta.unbox(shapes["params"]), seed=4)
    pretrained.save_pretrained(tmp_path / "ours", params, config, "Wav2Vec2ForSpeechTranslation")
    assert convert_main(["orbax-to-hf", str(tmp_path / "ours"), str(tmp_path / "hf")]) == 0
    hf, info = transformers.SpeechEncoderDecoderModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info.values()), info
    hf.eval()
    audio, padding = audio_batch((1600, 1100), seed=3)
    ids = target_batch(vocab=config.decoder.vocab_size, seed=3)
    loaded = pretrained.load_pretrained(tmp_path / "ours")
    ours = _our_logits(loaded, audio, padding, ids)
    assert max_abs_diff(ours, _hf_logits(hf, audio, padding, ids), ids != 1) < TOL

    assert convert_main(["hf-to-orbax", str(tmp_path / "hf"), str(tmp_path / "again")]) == 0
    again = pretrained.load_pretrained(tmp_path / "again")
    assert again.config == loaded.config
    flat, flat_again = params_lib.flatten(loaded.params), params_lib.flatten(again.params)
    assert flat.keys() == flat_again.keys()
    for key in flat:
        np.testing.assert_array_equal(flat[key], flat_again[key], err_msg="/".join(key))


def test_bad_translation_folder_is_one_line(tmp_path, capsys):
    hf = hf_model(seed=2)
    hf.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["encoder"]["add_adapter"] = False
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    capsys.readouterr()  # transformers' own progress output while saving
    assert convert_main(["hf-to-orbax", str(tmp_path / "hf"), str(tmp_path / "ours")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "add_adapter" in err


def test_config_transformers_cannot_build_is_refused(tmp_path):
    from xlsr_jax.convert import ConfigError
    from xlsr_jax.convert import speech_translation as st
    from xlsr_jax.models.speech_translation import tiny_speech_translation_config

    with pytest.raises(ConfigError, match="output_hidden_size"):
        st.st_config_to_hf(tiny_speech_translation_config(decoder_overrides={"d_model": 32}))
