"""Rename tables between fairseq, Hugging Face and our parameter names.

Two tables, both plain data:

* `FAIRSEQ_TO_HF`: regular expressions over fairseq state-dict keys -> HF key templates. Conversion
  from fairseq goes fairseq -> HF names -> our tree, so the numerics are written once.
* `hf_param_table(config, architecture)`: for a given config, every HF key the model has, the path
  of our parameter it becomes, and the layout transform between them (see `TRANSFORMS`).

Layouts (torch -> ours):
  Linear weight [out, in]           -> kernel [in, out]
  Conv1d weight [out, in/groups, K] -> kernel [K, in/groups, out]     (flax Conv)
  q/k/v weight [H*D, E], bias [H*D] -> kernel [E, H, D], bias [H, D]  (output unit h*D + d)
  out_proj weight [E, H*D]          -> kernel [H, D, E]
  weight_norm(dim=2) g [1, 1, K]    -> weight_g [K];  v [E, E/groups, K] -> weight_v [K, E/groups, E]
  quantizer codevectors [1, G*V, d] -> [G*V, d]
  LayerNorm/GroupNorm weight        -> scale
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np

from xlsr_jax.models.config import Wav2Vec2Config
from xlsr_jax.models.decoder import MBartDecoderConfig
from xlsr_jax.models.speech_translation import SpeechTranslationConfig
from xlsr_jax.models.transformer import SCANNED_LAYERS, layer_name

# ----------------------------------------------------------------------------- fairseq <-> HF

# (fairseq key regex, HF key template). `{i}` / `{j}` take the regex groups. Pretraining
# checkpoints use the keys as written; CTC fine-tuned ones prefix the encoder with
# `w2v_encoder.w2v_model.` (see FAIRSEQ_CTC_PREFIX). Weight norm: fairseq's
# `nn.utils.weight_norm` saves weight_g/weight_v; newer torch saves parametrizations.
_W2V = "wav2vec2."
FAIRSEQ_TO_HF: tuple[tuple[str, str], ...] = (
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", _W2V + "feature_extractor.conv_layers.{0}.conv.{1}"),
    # extractor_mode=default: Sequential(conv, dropout, Fp32GroupNorm, GELU) on layer 0.
    (
        r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)",
        _W2V + "feature_extractor.conv_layers.{0}.layer_norm.{1}",
    ),
    # extractor_mode=layer_norm: Sequential(conv, dropout, Sequential(T, Fp32LayerNorm, T), GELU).
    (
        r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)",
        _W2V + "feature_extractor.conv_layers.{0}.layer_norm.{1}",
    ),
    (r"layer_norm\.(weight|bias)", _W2V + "feature_projection.layer_norm.{0}"),
    (r"post_extract_proj\.(weight|bias)", _W2V + "feature_projection.projection.{0}"),
    (r"mask_emb", _W2V + "masked_spec_embed"),
    (r"encoder\.pos_conv\.0\.weight_g", _W2V + "encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.weight_v", _W2V + "encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (
        r"encoder\.pos_conv\.0\.parametrizations\.weight\.original([01])",
        _W2V + "encoder.pos_conv_embed.conv.parametrizations.weight.original{0}",
    ),
    (r"encoder\.pos_conv\.0\.bias", _W2V + "encoder.pos_conv_embed.conv.bias"),
    (r"encoder\.layer_norm\.(weight|bias)", _W2V + "encoder.layer_norm.{0}"),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)",
        _W2V + "encoder.layers.{0}.attention.{1}_proj.{2}",
    ),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", _W2V + "encoder.layers.{0}.layer_norm.{1}"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", _W2V + "encoder.layers.{0}.feed_forward.intermediate_dense.{1}"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", _W2V + "encoder.layers.{0}.feed_forward.output_dense.{1}"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", _W2V + "encoder.layers.{0}.final_layer_norm.{1}"),
    (r"quantizer\.vars", "quantizer.codevectors"),
    (r"quantizer\.weight_proj\.(weight|bias)", "quantizer.weight_proj.{0}"),
    (r"project_q\.(weight|bias)", "project_q.{0}"),
    (r"final_proj\.(weight|bias)", "project_hid.{0}"),
)
FAIRSEQ_CTC_PREFIX = "w2v_encoder.w2v_model."
FAIRSEQ_CTC_HEAD: tuple[tuple[str, str], ...] = ((r"w2v_encoder\.proj\.(weight|bias)", "lm_head.{0}"),)

# HF -> fairseq, for writing fairseq-layout state dicts (tests) and for error messages. Written
# as the inverse table explicitly rather than inverted from the regexes.
HF_TO_FAIRSEQ: tuple[tuple[str, str], ...] = (
    (
        r"wav2vec2\.feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)",
        "feature_extractor.conv_layers.{0}.0.{1}",
    ),
    (r"wav2vec2\.feature_projection\.layer_norm\.(weight|bias)", "layer_norm.{0}"),
    (r"wav2vec2\.feature_projection\.projection\.(weight|bias)", "post_extract_proj.{0}"),
    (r"wav2vec2\.masked_spec_embed", "mask_emb"),
    (r"wav2vec2\.encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0", "encoder.pos_conv.0.weight_g"),
    (r"wav2vec2\.encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1", "encoder.pos_conv.0.weight_v"),
    (r"wav2vec2\.encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
    (r"wav2vec2\.encoder\.layer_norm\.(weight|bias)", "encoder.layer_norm.{0}"),
    (
        r"wav2vec2\.encoder\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.(weight|bias)",
        "encoder.layers.{0}.self_attn.{1}_proj.{2}",
    ),
    (r"wav2vec2\.encoder\.layers\.(\d+)\.layer_norm\.(weight|bias)", "encoder.layers.{0}.self_attn_layer_norm.{1}"),
    (
        r"wav2vec2\.encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)",
        "encoder.layers.{0}.fc1.{1}",
    ),
    (r"wav2vec2\.encoder\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", "encoder.layers.{0}.fc2.{1}"),
    (r"wav2vec2\.encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", "encoder.layers.{0}.final_layer_norm.{1}"),
    (r"quantizer\.codevectors", "quantizer.vars"),
    (r"quantizer\.weight_proj\.(weight|bias)", "quantizer.weight_proj.{0}"),
    (r"project_q\.(weight|bias)", "project_q.{0}"),
    (r"project_hid\.(weight|bias)", "final_proj.{0}"),
    (r"lm_head\.(weight|bias)", "w2v_encoder.proj.{0}"),
)

# Legacy HF names (transformers < 4.3x saved torch's old weight_norm attributes).
HF_LEGACY_RENAMES: tuple[tuple[str, str], ...] = (
    (r"(.*pos_conv_embed\.conv)\.weight_g", "{0}.parametrizations.weight.original0"),
    (r"(.*pos_conv_embed\.conv)\.weight_v", "{0}.parametrizations.weight.original1"),
)


def hf_to_fairseq_key(key: str, feat_extract_norm: str, ctc: bool) -> str | None:
    """The fairseq state-dict key for HF `key` (None if fairseq has no such tensor).

    The conv-block norms sit at different depths in fairseq's two extractor modes, so they are
    not in the flat table.
    """
    m = re.fullmatch(r"wav2vec2\.feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", key)
    if m:
        inner = ".2." if feat_extract_norm == "group" else ".2.1."
        out = f"feature_extractor.conv_layers.{m.group(1)}{inner}{m.group(2)}"
    else:
        out = rename_by_table(key, HF_TO_FAIRSEQ)
    if out is None:
        return None
    if ctc and not out.startswith("w2v_encoder."):
        out = FAIRSEQ_CTC_PREFIX + out
    return out


def rename_by_table(key: str, table: tuple[tuple[str, str], ...]) -> str | None:
    """The first full match of `key` in `table` formatted with its groups, or None."""
    for pattern, template in table:
        m = re.fullmatch(pattern, key)
        if m:
            return template.format(*m.groups())
    return None


def fairseq_layer_norm_layer_ids(config: Wav2Vec2Config) -> tuple[int, ...]:
    """Conv layers that carry a norm: layer 0 in group mode, all in layer mode."""
    return (0,) if config.feat_extract_norm == "group" else tuple(range(len(config.conv_dim)))


# ----------------------------------------------------------------------------- HF <-> ours


@dataclasses.dataclass(frozen=True)
class Transform:
    """A layout change between a torch tensor and our parameter (both numpy)."""

    name: str
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def _ident() -> Transform:
    return Transform("identity", lambda x: x, lambda x: x)


def _linear() -> Transform:
    return Transform("linear", lambda w: w.T, lambda k: k.T)


def _conv() -> Transform:
    return Transform("conv", lambda w: w.transpose(2, 1, 0), lambda k: k.transpose(2, 1, 0))


def _qkv_kernel(heads: int, head_dim: int) -> Transform:
    return Transform(
        "qkv_kernel",
        lambda w: w.T.reshape(w.shape[1], heads, head_dim),
        lambda k: k.reshape(k.shape[0], heads * head_dim).T,
    )


def _qkv_bias(heads: int, head_dim: int) -> Transform:
    return Transform("qkv_bias", lambda b: b.reshape(heads, head_dim), lambda b: b.reshape(-1))


def _out_kernel(heads: int, head_dim: int) -> Transform:
    return Transform(
        "out_kernel",
        lambda w: w.T.reshape(heads, head_dim, w.shape[0]),
        lambda k: k.reshape(heads * head_dim, k.shape[-1]).T,
    )


def _weight_g() -> Transform:
    return Transform("weight_g", lambda g: g.reshape(-1), lambda g: g.reshape(1, 1, -1))


def _codevectors() -> Transform:
    return Transform("codevectors", lambda c: c[0], lambda c: c[None])


@dataclasses.dataclass(frozen=True)
class ParamRule:
    """One HF tensor <-> one of our parameters.

    `layer` is the Transformer layer index for per-layer parameters (None otherwise); with
    scanned layers our parameters of all layers are stacked along a leading axis at `ours`.
    """

    hf: str
    ours: tuple[str, ...]
    hf_shape: tuple[int, ...]
    ours_shape: tuple[int, ...]
    transform: Transform
    layer: int | None = None


def hf_param_table(config: Wav2Vec2Config, architecture: str) -> list[ParamRule]:
    """Every parameter of the HF model `architecture` built from `config`, with its counterpart.

    The HF masked_spec_embed exists only when mask_time_prob or mask_feature_prob is > 0
    (HF's Wav2Vec2Model.__init__); the table follows that rule.
    """
    c = config
    E, F, H, D = c.hidden_size, c.intermediate_size, c.num_attention_heads, c.head_dim
    C = c.conv_dim[-1]
    P = c.num_conv_pos_embeddings
    pg = E // c.num_conv_pos_embedding_groups
    rules: list[ParamRule] = []

    def add(hf, ours, hf_shape, ours_shape, transform, layer=None, base=True):
        prefix_hf = "wav2vec2." if base and architecture != "Wav2Vec2Model" else ""
        prefix_ours = ("wav2vec2",) if base and architecture != "Wav2Vec2Model" else ()
        rules.append(
            ParamRule(
                prefix_hf + hf,
                prefix_ours + tuple(ours.split("/")),
                tuple(hf_shape),
                tuple(ours_shape),
                transform,
                layer,
            )
        )

    def linear(hf, ours, n_in, n_out, base=True, layer=None):
        add(hf + ".weight", ours + "/kernel", (n_out, n_in), (n_in, n_out), _linear(), layer, base)
        add(hf + ".bias", ours + "/bias", (n_out,), (n_out,), _ident(), layer, base)

    def norm(hf, ours, n, layer=None):
        add(hf + ".weight", ours + "/scale", (n,), (n,), _ident(), layer)
        add(hf + ".bias", ours + "/bias", (n,), (n,), _ident(), layer)

    c_in = 1
    for i, (c_out, k) in enumerate(zip(c.conv_dim, c.conv_kernel)):
        hf_l, our_l = f"feature_extractor.conv_layers.{i}", f"feature_extractor/conv_layers_{i}"
        add(hf_l + ".conv.weight", our_l + "/conv/kernel", (c_out, c_in, k), (k, c_in, c_out), _conv())
        if c.conv_bias:
            add(hf_l + ".conv.bias", our_l + "/conv/bias", (c_out,), (c_out,), _ident())
        if i in fairseq_layer_norm_layer_ids(c):
            norm(hf_l + ".layer_norm", our_l + "/layer_norm", c_out)
        c_in = c_out
    norm("feature_projection.layer_norm", "feature_projection/layer_norm", C)
    linear("feature_projection.projection", "feature_projection/projection", C, E)
    if c.mask_time_prob > 0 or c.mask_feature_prob > 0:
        add("masked_spec_embed", "masked_spec_embed", (E,), (E,), _ident())
    pc = "encoder.pos_conv_embed.conv"
    add(pc + ".parametrizations.weight.original0", "encoder/pos_conv_embed/weight_g", (1, 1, P), (P,), _weight_g())
    add(pc + ".parametrizations.weight.original1", "encoder/pos_conv_embed/weight_v", (E, pg, P), (P, pg, E), _conv())
    add(pc + ".bias", "encoder/pos_conv_embed/bias", (E,), (E,), _ident())
    norm("encoder.layer_norm", "encoder/layer_norm", E)
    for i in range(c.num_hidden_layers):
        hf_l = f"encoder.layers.{i}"
        our_l = f"encoder/{SCANNED_LAYERS}" if c.scan_layers else f"encoder/{layer_name(i)}"
        for name in ("q_proj", "k_proj", "v_proj"):
            add(
                f"{hf_l}.attention.{name}.weight",
                f"{our_l}/attention/{name}/kernel",
                (E, E),
                (E, H, D),
                _qkv_kernel(H, D),
                i,
            )
            add(f"{hf_l}.attention.{name}.bias", f"{our_l}/attention/{name}/bias", (E,), (H, D), _qkv_bias(H, D), i)
        add(
            f"{hf_l}.attention.out_proj.weight",
            f"{our_l}/attention/out_proj/kernel",
            (E, E),
            (H, D, E),
            _out_kernel(H, D),
            i,
        )
        add(f"{hf_l}.attention.out_proj.bias", f"{our_l}/attention/out_proj/bias", (E,), (E,), _ident(), i)
        norm(f"{hf_l}.layer_norm", f"{our_l}/layer_norm", E, layer=i)
        linear(f"{hf_l}.feed_forward.intermediate_dense", f"{our_l}/feed_forward/intermediate_dense", E, F, layer=i)
        linear(f"{hf_l}.feed_forward.output_dense", f"{our_l}/feed_forward/output_dense", F, E, layer=i)
        norm(f"{hf_l}.final_layer_norm", f"{our_l}/final_layer_norm", E, layer=i)

    if c.add_adapter:  # HF Wav2Vec2Adapter (part of the base model, after the encoder)
        W = c.adapter_hidden_size
        if W != E:
            linear("adapter.proj", "adapter/proj", E, W)
            norm("adapter.proj_layer_norm", "adapter/proj_layer_norm", W)
        K = c.adapter_kernel_size
        for i in range(c.num_adapter_layers):
            add(f"adapter.layers.{i}.conv.weight", f"adapter/layers_{i}/kernel", (2 * W, W, K), (K, W, 2 * W), _conv())
            add(f"adapter.layers.{i}.conv.bias", f"adapter/layers_{i}/bias", (2 * W,), (2 * W,), _ident())

    if architecture == "Wav2Vec2ForPreTraining":
        G, V, cd = c.num_codevector_groups, c.num_codevectors_per_group, c.codevector_dim
        add(
            "quantizer.codevectors",
            "quantizer/codevectors",
            (1, G * V, cd // G),
            (G * V, cd // G),
            _codevectors(),
            base=False,
        )
        linear("quantizer.weight_proj", "quantizer/weight_proj", C, G * V, base=False)
        linear("project_hid", "project_hid", E, c.proj_codevector_dim, base=False)
        linear("project_q", "project_q", cd, c.proj_codevector_dim, base=False)
    elif architecture == "Wav2Vec2ForCTC":
        linear("lm_head", "lm_head", E, c.vocab_size, base=False)
    elif architecture == "Wav2Vec2ForSequenceClassification":
        if c.use_weighted_layer_sum:
            n = c.num_hidden_layers + 1
            add("layer_weights", "layer_weights", (n,), (n,), _ident(), base=False)
        linear("projector", "projector", E, c.classifier_proj_size, base=False)
        linear("classifier", "classifier", c.classifier_proj_size, c.num_labels, base=False)
    return rules


def decoder_param_table(config: MBartDecoderConfig, hf_prefix: str = "decoder.") -> list[ParamRule]:
    """Every parameter of HF `MBartForCausalLM` (under `hf_prefix`) with our `Decoder` counterpart.

    HF nests the decoder as `model.decoder.*` with `lm_head` beside it; a tied `lm_head` (the
    default) is the embedding matrix and has no parameter of its own on our side, nor in the
    files `save_pretrained` writes.
    """
    c = config
    E, F, H, D = c.d_model, c.decoder_ffn_dim, c.decoder_attention_heads, c.head_dim
    rules: list[ParamRule] = []
    base = hf_prefix + "model.decoder."

    def add(hf, ours, hf_shape, ours_shape, transform, layer=None):
        rules.append(
            ParamRule(hf, ("decoder",) + tuple(ours.split("/")), tuple(hf_shape), tuple(ours_shape), transform, layer)
        )

    def linear(hf, ours, n_in, n_out, layer):
        add(hf + ".weight", ours + "/kernel", (n_out, n_in), (n_in, n_out), _linear(), layer)
        add(hf + ".bias", ours + "/bias", (n_out,), (n_out,), _ident(), layer)

    def norm(hf, ours, layer=None):
        add(hf + ".weight", ours + "/scale", (E,), (E,), _ident(), layer)
        add(hf + ".bias", ours + "/bias", (E,), (E,), _ident(), layer)

    add(base + "embed_tokens.weight", "embed_tokens/embedding", (c.vocab_size, E), (c.vocab_size, E), _ident())
    positions = c.max_position_embeddings + 2  # MBartLearnedPositionalEmbedding's offset
    add(base + "embed_positions.weight", "embed_positions/embedding", (positions, E), (positions, E), _ident())
    norm(base + "layernorm_embedding", "layernorm_embedding")
    for i in range(c.decoder_layers):
        hf_l, our_l = f"{base}layers.{i}", f"layers_{i}"
        for attn in ("self_attn", "encoder_attn"):
            for name in ("q_proj", "k_proj", "v_proj"):
                add(
                    f"{hf_l}.{attn}.{name}.weight",
                    f"{our_l}/{attn}/{name}/kernel",
                    (E, E),
                    (E, H, D),
                    _qkv_kernel(H, D),
                    i,
                )
                add(f"{hf_l}.{attn}.{name}.bias", f"{our_l}/{attn}/{name}/bias", (E,), (H, D), _qkv_bias(H, D), i)
            add(
                f"{hf_l}.{attn}.out_proj.weight",
                f"{our_l}/{attn}/out_proj/kernel",
                (E, E),
                (H, D, E),
                _out_kernel(H, D),
                i,
            )
            add(f"{hf_l}.{attn}.out_proj.bias", f"{our_l}/{attn}/out_proj/bias", (E,), (E,), _ident(), i)
            norm(f"{hf_l}.{attn}_layer_norm", f"{our_l}/{attn}_layer_norm", i)
        linear(f"{hf_l}.fc1", f"{our_l}/fc1", E, F, i)
        linear(f"{hf_l}.fc2", f"{our_l}/fc2", F, E, i)
        norm(f"{hf_l}.final_layer_norm", f"{our_l}/final_layer_norm", i)
    norm(base + "layer_norm", "layer_norm")
    if not c.tie_word_embeddings:
        add(hf_prefix + "lm_head.weight", "lm_head/kernel", (c.vocab_size, E), (E, c.vocab_size), _linear())
    return rules


def speech_translation_param_table(config: SpeechTranslationConfig) -> list[ParamRule]:
    """Every parameter of HF `SpeechEncoderDecoderModel` (Wav2Vec2Model with its adapter +
    MBartForCausalLM) with our `Wav2Vec2ForSpeechTranslation` counterpart."""
    # Our model keeps the adapter beside the encoder (`adapter/`), HF inside it (`encoder.adapter.`).
    rules = [
        dataclasses.replace(r, hf="encoder." + r.hf, ours=r.ours if r.ours[0] == "adapter" else ("wav2vec2",) + r.ours)
        for r in hf_param_table(config.encoder, "Wav2Vec2Model")
    ]
    rules += decoder_param_table(config.decoder)
    if config.needs_enc_to_dec_proj:
        n_in, n_out = config.encoder.encoder_output_size, config.decoder.d_model
        rules.append(
            ParamRule("enc_to_dec_proj.weight", ("enc_to_dec_proj", "kernel"), (n_out, n_in), (n_in, n_out), _linear())
        )
        rules.append(ParamRule("enc_to_dec_proj.bias", ("enc_to_dec_proj", "bias"), (n_out,), (n_out,), _ident()))
    return rules
