"""`python -m xlsr_jax.extract`: per-file hidden states from an exported checkpoint."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from data_pipelines.audio import load_audio, normalize
from tests.convert_testlib import our_param_shapes, random_params
from xlsr_jax import pretrained
from xlsr_jax.extract import main
from xlsr_jax.models import Wav2Vec2Config, Wav2Vec2Model


def _config(norm: str) -> Wav2Vec2Config:
    return Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=40,
        conv_dim=(16, 24, 32),
        conv_stride=(5, 2, 2),
        conv_kernel=(10, 3, 3),
        conv_bias=norm == "layer",
        feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer",
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4,
        num_codevectors_per_group=12,
        codevector_dim=16,
        proj_codevector_dim=12,
    )


@pytest.fixture
def audio_files(tmp_path):
    rng = np.random.RandomState(0)
    a = tmp_path / "a.wav"  # 22.05 kHz mono: resampled on load
    sf.write(a, (0.3 * rng.standard_normal(22050 * 13 // 100)).astype(np.float32), 22050)
    b = tmp_path / "b.flac"  # 16 kHz stereo: downmixed
    sf.write(b, (0.2 * rng.standard_normal((2300, 2))).astype(np.float32), 16000)
    return [str(a), str(b)]


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_extract_matches_the_model_per_file(norm, audio_files, tmp_path):
    if norm == "group":  # exact lengths: one compilation per distinct file length, so use one file
        audio_files = audio_files[1:]
    cfg = _config(norm)
    params = random_params(our_param_shapes(cfg, "Wav2Vec2ForPreTraining"), seed=1)
    ckpt = pretrained.save_pretrained(tmp_path / "ckpt", params, cfg, "Wav2Vec2ForPreTraining")
    bucket = ["--bucket_seconds", "0.25"]  # both files fall in one 4000-sample bucket
    assert main(["--ckpt", ckpt, "--out", str(tmp_path / "all.npz"), *bucket, *audio_files]) == 0
    assert main(["--ckpt", ckpt, "--layer", "1", "--out", str(tmp_path / "l1.npz"), *bucket, *audio_files]) == 0
    assert main(["--ckpt", ckpt, "--layer", "final", "--out", str(tmp_path / "fin.npz"), *bucket, *audio_files]) == 0
    every, one, final = (np.load(tmp_path / f) for f in ("all.npz", "l1.npz", "fin.npz"))
    assert list(every["paths"]) == audio_files and str(one["layer"]) == "1"
    model = Wav2Vec2Model(cfg)
    reference = jax.jit(lambda p, a: model.apply({"params": p}, a, None, deterministic=True, output_hidden_states=True))
    for i, path in enumerate(audio_files):
        audio = load_audio(path)
        if norm == "layer":  # the XLS-R convention: normalised input (model.json audio.do_normalize)
            audio = normalize(audio)
        ref = reference(params["wav2vec2"], jnp.asarray(audio)[None])  # exact length, unpadded
        frames = cfg.feature_lengths(audio.shape[0])
        assert every["num_frames"][i] == frames
        assert every[f"features_{i}"].shape == (cfg.num_hidden_layers + 1, frames, cfg.hidden_size)
        # Layer-norm models are padded to a 1 s bucket: the valid frames must not change.
        np.testing.assert_allclose(every[f"features_{i}"], np.stack(ref.hidden_states)[:, 0], atol=1e-4)
        # Two compiled programs (one layer kept vs all): XLA may fuse them differently per CPU model.
        np.testing.assert_allclose(one[f"features_{i}"], every[f"features_{i}"][1], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(final[f"features_{i}"], ref.last_hidden_state[0], atol=1e-4)


def test_extract_rejects_bad_layer_and_missing_checkpoint(audio_files, tmp_path):
    cfg = _config("layer")
    params = random_params(our_param_shapes(cfg, "Wav2Vec2Model"), seed=2)
    ckpt = pretrained.save_pretrained(tmp_path / "ckpt", params, cfg, "Wav2Vec2Model")
    with pytest.raises(SystemExit, match="out of range"):
        main(["--ckpt", ckpt, "--layer", "3", "--out", str(tmp_path / "x.npz"), *audio_files])
    assert main(["--ckpt", str(tmp_path), "--out", str(tmp_path / "x.npz"), *audio_files]) == 1
    assert not (tmp_path / "x.npz").exists()
