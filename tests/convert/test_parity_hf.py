"""Numerical parity with PyTorch `transformers` Wav2Vec2, both directions.

HF -> ours: random-initialised transformers models (tiny configs, no downloads) are saved with
`save_pretrained`, converted with `hf_to_orbax`, loaded with `load_pretrained`, and run on the
same audio; every hidden state, CTC and classification logits, quantizer codes and the
pretraining loss must agree (float32, 1e-4).

Ours -> HF: random parameters of our models are exported with `orbax_to_hf`; transformers'
`from_pretrained` must report no missing / unexpected / mis-shaped keys and produce the same
outputs; Orbax -> HF -> Orbax must give back the identical checkpoint.

Padding: HF takes `attention_mask` (1 = real sample), we take `padding_mask` (True = padding).
HF's feature extractor returns no attention mask for group-norm models (their GroupNorm spans
the padding anyway); the models still accept one, and both sides then agree on the valid frames,
which is what is compared (padded frames are undefined in both).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need the torch extra: pip install -e '.[torch]'")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers (the torch extra)")

from tests.convert_testlib import (
    MODE_IDS,
    MODES,
    audio_batch,
    hf_config,
    max_abs_diff,
    our_param_shapes,
    random_params,
)
from xlsr_jax import losses, models, pretrained
from xlsr_jax.convert import configs, hf_to_orbax, orbax_to_hf
from xlsr_jax.convert import params as params_lib
from xlsr_jax.models import Wav2Vec2Model

TOL = 1e-4


def _hf_forward(model, audio, padding=None, **kw):
    mask = None if padding is None else torch.from_numpy(~padding).long()
    with torch.no_grad():
        return model(torch.from_numpy(audio), attention_mask=mask, **kw)


def _frames_valid(config, padding):
    from xlsr_jax.models.wav2vec2 import frame_padding_mask

    frames = config.feature_lengths(padding.shape[1])
    return ~np.asarray(frame_padding_mask(config, jnp.asarray(padding), frames, padding.shape[0]))


def _encode(loaded, audio, padding=None):
    return Wav2Vec2Model(loaded.config).apply(
        {"params": loaded.params["wav2vec2"]},
        jnp.asarray(audio),
        None if padding is None else jnp.asarray(padding),
        deterministic=True,
        output_hidden_states=True,
    )


@pytest.fixture(scope="module", params=MODES, ids=MODE_IDS)
def pretraining_pair(request, tmp_path_factory):
    """(HF Wav2Vec2ForPreTraining in eval mode, our converted checkpoint) for one mode."""
    norm, stable = request.param
    torch.manual_seed(0)
    hf = transformers.Wav2Vec2ForPreTraining(hf_config(norm, stable)).eval()
    root = tmp_path_factory.mktemp(f"pre-{norm}-{stable}")
    hf.save_pretrained(root / "hf")
    loaded = pretrained.load_pretrained(hf_to_orbax(root / "hf", root / "ours"))
    return hf, loaded


def test_hidden_states_match_without_padding(pretraining_pair):
    hf, loaded = pretraining_pair
    audio, _ = audio_batch(lengths=(1600, 1600))
    ref = _hf_forward(hf.wav2vec2, audio, output_hidden_states=True)
    out = _encode(loaded, audio)
    assert len(out.hidden_states) == len(ref.hidden_states) == loaded.config.num_hidden_layers + 1
    for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        assert max_abs_diff(a, b) < TOL, f"hidden state {i}"
    assert max_abs_diff(out.last_hidden_state, ref.last_hidden_state) < TOL
    assert max_abs_diff(out.extract_features, ref.extract_features) < TOL


def test_hidden_states_match_with_padding(pretraining_pair):
    hf, loaded = pretraining_pair
    audio, padding = audio_batch(lengths=(1600, 1100))
    ref = _hf_forward(hf.wav2vec2, audio, padding, output_hidden_states=True)
    out = _encode(loaded, audio, padding)
    valid = _frames_valid(loaded.config, padding)
    assert not valid.all()
    for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        assert max_abs_diff(a, b, valid) < TOL, f"hidden state {i}"
    assert max_abs_diff(out.last_hidden_state, ref.last_hidden_state, valid) < TOL


def _pretraining_inputs(config, batch, frames, seed=0):
    """HF's own mask and negative samplers; negatives converted to our per-utterance indices."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import (
        _compute_mask_indices,
        _sample_negative_indices,
    )

    np.random.seed(seed)
    mask = _compute_mask_indices((batch, frames), config.mask_time_prob, config.mask_time_length, min_masks=2)
    negatives = _sample_negative_indices((batch, frames), config.num_negatives, mask)  # offset by b * frames
    ours = negatives - (np.arange(batch) * frames)[:, None, None]
    assert ours.min() >= 0 and ours.max() < frames
    return mask.astype(bool), negatives.astype(np.int64), ours.astype(np.int32)


def test_quantizer_codes_and_pretraining_loss_match(pretraining_pair):
    hf, loaded = pretraining_pair
    cfg = loaded.config
    audio, _ = audio_batch(lengths=(1600, 1600), seed=1)
    frames = cfg.feature_lengths(audio.shape[1])
    mask, hf_neg, our_neg = _pretraining_inputs(cfg, audio.shape[0], frames)
    ref = _hf_forward(
        hf, audio, mask_time_indices=torch.from_numpy(mask), sampled_negative_indices=torch.from_numpy(hf_neg)
    )
    model = models.model_class("Wav2Vec2ForPreTraining")(cfg)
    out = model.apply(
        {"params": loaded.params},
        jnp.asarray(audio),
        None,
        deterministic=True,
        mask_time_indices=jnp.asarray(mask),
        sampled_negative_indices=jnp.asarray(our_neg),
    )

    # Codes: HF's eval-mode quantizer takes the argmax of weight_proj over each group.
    with torch.no_grad():
        feats = hf.wav2vec2(torch.from_numpy(audio)).extract_features
        logits = hf.quantizer.weight_proj(feats).view(audio.shape[0], frames, cfg.num_codevector_groups, -1)
        hf_quantized, hf_ppl = hf.quantizer(feats, mask_time_indices=torch.from_numpy(mask))
    np.testing.assert_array_equal(np.asarray(out.codes), logits.argmax(-1).numpy())
    book = np.asarray(loaded.params["quantizer"]["codevectors"]).reshape(
        cfg.num_codevector_groups, cfg.num_codevectors_per_group, -1
    )
    ours_quantized = np.concatenate(
        [book[g][np.asarray(out.codes)[..., g]] for g in range(cfg.num_codevector_groups)], axis=-1
    )
    assert max_abs_diff(ours_quantized, hf_quantized) < TOL
    # In eval mode HF's perplexity is of the hard codes (ours: code_perplexity).
    np.testing.assert_allclose(float(out.code_perplexity), float(hf_ppl), rtol=1e-4)

    # Loss: HF sums the contrastive term over masked frames and weights the diversity term by
    # their count; ours is per masked frame. Diversity uses the hard-code perplexity here.
    loss_sum, _, count = losses.contrastive_loss(out.logits, out.mask_time_indices)
    n = float(mask.sum())
    assert float(count) == n
    np.testing.assert_allclose(float(loss_sum), float(ref.contrastive_loss), rtol=TOL)
    diversity = float(losses.diversity_loss(out.code_perplexity, cfg.num_codevectors)) * n
    np.testing.assert_allclose(diversity, float(ref.diversity_loss), rtol=TOL)
    np.testing.assert_allclose(float(loss_sum) + cfg.diversity_loss_weight * diversity, float(ref.loss), rtol=TOL)
    _, metrics = losses.pretraining_loss(out, cfg)
    np.testing.assert_allclose(float(metrics["contrastive_loss"]), float(ref.contrastive_loss) / n, rtol=TOL)


def _save_ctc_folder(model, folder, vocab):
    model.save_pretrained(folder)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    tokenizer = transformers.Wav2Vec2CTCTokenizer(
        os.path.join(folder, "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|"
    )
    extractor = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True)
    transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)


VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "a": 5, "b": 6, "c": 7, "d": 8, "e": 9}


@pytest.mark.parametrize("norm,stable", [("group", False), ("layer", True)], ids=["group-postLN", "layer-preLN"])
def test_ctc_logits_match(norm, stable, tmp_path):
    torch.manual_seed(1)
    hf = transformers.Wav2Vec2ForCTC(hf_config(norm, stable)).eval()
    _save_ctc_folder(hf, tmp_path / "hf", VOCAB)
    loaded = pretrained.load_pretrained(hf_to_orbax(tmp_path / "hf", tmp_path / "ours"))
    assert loaded.architecture == "Wav2Vec2ForCTC" and loaded.vocab == VOCAB
    model = loaded.model()
    for lengths in ((1600, 1600), (1600, 1100)):
        audio, padding = audio_batch(lengths, seed=2)
        unpadded = not padding.any()
        ref = _hf_forward(hf, audio, None if unpadded else padding).logits
        logits, frame_padding = model.apply(
            {"params": loaded.params},
            jnp.asarray(audio),
            None if unpadded else jnp.asarray(padding),
            deterministic=True,
        )
        assert max_abs_diff(logits, ref, ~np.asarray(frame_padding)) < TOL


@pytest.mark.parametrize("weighted", [False, True], ids=["last", "weighted-layer-sum"])
def test_sequence_classification_logits_match(weighted, tmp_path):
    torch.manual_seed(2)
    hf = transformers.Wav2Vec2ForSequenceClassification(
        hf_config("layer", True, use_weighted_layer_sum=weighted)
    ).eval()
    if weighted:  # non-uniform layer weights, so the layer order matters
        with torch.no_grad():
            hf.layer_weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
    hf.save_pretrained(tmp_path / "hf")
    # A classifier's outputs depend on its input rate and normalisation: the folder states them.
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path / "hf")
    loaded = pretrained.load_pretrained(hf_to_orbax(tmp_path / "hf", tmp_path / "ours"))
    for lengths in ((1600, 1600), (1600, 1100)):
        audio, padding = audio_batch(lengths, seed=3)
        unpadded = not padding.any()
        ref = _hf_forward(hf, audio, None if unpadded else padding).logits
        logits = loaded.model().apply(
            {"params": loaded.params},
            jnp.asarray(audio),
            None if unpadded else jnp.asarray(padding),
            deterministic=True,
        )
        assert max_abs_diff(logits, ref) < TOL


# ----------------------------------------------------------------------------- ours -> HF


def _export(tmp_path, arch, norm, stable, vocab=None, **overrides):
    cfg, _, _ = configs.hf_to_config(json.loads(hf_config(norm, stable, **overrides).to_json_string()))
    params = random_params(our_param_shapes(cfg, arch), seed=4)
    ckpt = pretrained.save_pretrained(tmp_path / "ours", params, cfg, arch, vocab=vocab)
    return pretrained.load_pretrained(ckpt), ckpt, orbax_to_hf(ckpt, tmp_path / "hf")


def _from_pretrained(cls, folder):
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


@pytest.mark.parametrize("norm,stable", MODES, ids=MODE_IDS)
def test_export_pretraining_loads_clean_and_matches(norm, stable, tmp_path):
    loaded, _ckpt, folder = _export(tmp_path, "Wav2Vec2ForPreTraining", norm, stable)
    hf = _from_pretrained(transformers.Wav2Vec2ForPreTraining, folder)
    audio, padding = audio_batch((1600, 1100), seed=5)
    ref = _hf_forward(hf.wav2vec2, audio, padding, output_hidden_states=True)
    out = _encode(loaded, audio, padding)
    valid = _frames_valid(loaded.config, padding)
    for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        assert max_abs_diff(a, b, valid) < TOL, f"hidden state {i}"
    # Orbax -> HF -> Orbax gives back the same checkpoint, bit for bit.
    again = pretrained.load_pretrained(hf_to_orbax(folder, tmp_path / "again"))
    assert again.config == loaded.config and again.architecture == loaded.architecture
    jax.tree.map(np.testing.assert_array_equal, again.params, loaded.params)


def test_export_ctc_with_processor(tmp_path):
    loaded, _ckpt, folder = _export(tmp_path, "Wav2Vec2ForCTC", "layer", True, vocab=VOCAB)
    hf = _from_pretrained(transformers.Wav2Vec2ForCTC, folder)
    processor = transformers.Wav2Vec2Processor.from_pretrained(folder)
    audio, padding = audio_batch((1600, 1100), seed=6)
    inputs = processor([a[~p] for a, p in zip(audio, padding)], sampling_rate=16000, return_tensors="np", padding=True)
    assert "attention_mask" in inputs  # layer-norm model: the processor pads with a mask
    values, mask = inputs["input_values"].astype(np.float32), inputs["attention_mask"].astype(bool)
    ref = _hf_forward(hf, values, ~mask).logits
    logits, frame_padding = loaded.model().apply(
        {"params": loaded.params}, jnp.asarray(values), jnp.asarray(~mask), deterministic=True
    )
    assert max_abs_diff(logits, ref, ~np.asarray(frame_padding)) < TOL
    ids = np.asarray(logits).argmax(-1)
    assert processor.batch_decode(ids) == processor.batch_decode(ref.numpy().argmax(-1))
    assert processor.tokenizer.convert_tokens_to_ids("e") == VOCAB["e"] and processor.tokenizer.pad_token_id == 0
    again = pretrained.load_pretrained(hf_to_orbax(folder, tmp_path / "again"))
    assert again.vocab == VOCAB and again.config == loaded.config


def test_export_sequence_classification(tmp_path):
    loaded, ckpt, _ = _export(
        tmp_path, "Wav2Vec2ForSequenceClassification", "group", False, use_weighted_layer_sum=True
    )
    folder = orbax_to_hf(ckpt, tmp_path / "hf_labelled", labels=["sw", "yo", "ha"])
    hf = _from_pretrained(transformers.Wav2Vec2ForSequenceClassification, folder)
    assert hf.config.id2label == {0: "sw", 1: "yo", 2: "ha"} and hf.config.label2id["ha"] == 2
    audio, _ = audio_batch((1600, 1600), seed=7)
    ref = _hf_forward(hf, audio).logits
    logits = loaded.model().apply({"params": loaded.params}, jnp.asarray(audio), None, deterministic=True)
    assert max_abs_diff(logits, ref) < TOL


def test_bare_encoder_from_pytorch_model_bin(tmp_path):
    """A headless Wav2Vec2Model folder with the older pytorch_model.bin weights file, converted by
    the CLI into the scanned (nn.scan) layer layout."""
    torch.manual_seed(6)
    hf = transformers.Wav2Vec2Model(hf_config("layer", True)).eval()
    hf.save_pretrained(tmp_path / "hf")
    os.remove(tmp_path / "hf" / "model.safetensors")
    torch.save(hf.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    # Through the CLI, converting to the scanned-layers layout.
    from xlsr_jax.convert.__main__ import main as cli

    assert cli(["hf-to-orbax", str(tmp_path / "hf"), str(tmp_path / "ours"), "--override", "scan_layers=true"]) == 0
    loaded = pretrained.load_pretrained(tmp_path / "ours")
    assert loaded.architecture == "Wav2Vec2Model" and loaded.config.scan_layers
    audio, _ = audio_batch((1600, 1600), seed=8)
    ref = _hf_forward(hf, audio, output_hidden_states=True)
    out = Wav2Vec2Model(loaded.config).apply(
        {"params": loaded.params}, jnp.asarray(audio), None, deterministic=True, output_hidden_states=True
    )
    for a, b in zip(out.hidden_states, ref.hidden_states):
        assert max_abs_diff(a, b) < TOL


@pytest.mark.parametrize(
    "preset,arch",
    [("base", "Wav2Vec2ForPreTraining"), ("large", "Wav2Vec2ForCTC"), ("xls_r_1b", "Wav2Vec2ForPreTraining")],
)
def test_published_sizes_have_matching_keys_and_shapes(preset, arch):
    """At the published sizes (BASE, XLSR-53 / XLS-R 300M, XLS-R 1B), transformers' parameter
    names and shapes equal the table's, on torch's meta device (no memory, no weights)."""
    from xlsr_jax.convert import tables
    from xlsr_jax.models import get_preset

    cfg = get_preset(preset)
    hf_dict = configs.config_to_hf(cfg, arch)
    hf_cfg = transformers.Wav2Vec2Config(**{k: v for k, v in hf_dict.items() if k != "architectures"})
    with torch.device("meta"):
        model = getattr(transformers, arch)(hf_cfg)
    hf_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    table = {r.hf: r.hf_shape for r in tables.hf_param_table(cfg, arch)}
    assert table == hf_shapes
    ours = {r.ours: r.ours_shape for r in tables.hf_param_table(cfg, arch)}
    shapes = {k: tuple(v.shape) for k, v in params_lib.flatten(our_param_shapes(cfg, arch)).items()}
    assert ours == shapes
