"""The model configuration, and presets with the published sizes.

Field names and meanings follow Hugging Face's `Wav2Vec2Config` so that a `config.json` maps onto
this dataclass one to one (the converters rely on it); the few fields HF lacks (fairseq's
`feature_grad_mult`, the feature-penalty weight, and the JAX execution knobs) come last.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

# The model classes a checkpoint can hold, by their transformers names: what `xlsr_jax.pretrained`
# records in model.json, what the trainer's tasks train, and what `xlsr_jax.convert` maps
# (`xlsr_jax.models.model_class` gives the flax module of each).
ARCHITECTURES = (
    "Wav2Vec2ForPreTraining",
    "Wav2Vec2Model",
    "Wav2Vec2ForCTC",
    "Wav2Vec2ForSequenceClassification",
    "Wav2Vec2ForSpeechTranslation",  # config: models.speech_translation.SpeechTranslationConfig
)

_TUPLE_FIELDS = ("conv_dim", "conv_stride", "conv_kernel")


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
    """Architecture and regularisation of a wav2vec 2.0 / XLSR / XLS-R model."""

    # Transformer context network.
    hidden_size: int = 768  # model width (fairseq encoder_embed_dim)
    num_hidden_layers: int = 12  # Transformer blocks
    num_attention_heads: int = 12
    intermediate_size: int = 3072  # feed-forward width
    hidden_act: str = "gelu"  # feed-forward activation (exact erf GELU, as torch)
    do_stable_layer_norm: bool = False  # pre-LN ("layer_norm_first", XLSR-53/XLS-R) vs post-LN
    layer_norm_eps: float = 1e-5
    num_conv_pos_embeddings: int = 128  # kernel of the convolutional positional embedding
    num_conv_pos_embedding_groups: int = 16

    # Convolutional feature encoder.
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"  # "group" (GroupNorm on layer 0) or "layer" (LN on every layer)
    feat_extract_activation: str = "gelu"

    # Dropout (all off when `deterministic=True`).
    hidden_dropout: float = 0.1  # residual branches and after the positional embedding
    attention_dropout: float = 0.1  # attention probabilities
    activation_dropout: float = 0.0  # inside the feed-forward block
    feat_proj_dropout: float = 0.1  # fairseq dropout_input: on projected features
    feat_quantizer_dropout: float = 0.0  # fairseq dropout_features: on the quantizer's input
    final_dropout: float = 0.1  # before a downstream head
    layerdrop: float = 0.05  # probability of skipping a Transformer block in training

    # Masking (SpecAugment-style spans, fairseq's compute_mask_indices).
    mask_time_prob: float = 0.65  # starts per frame x mask_time_length: expected share covered
    mask_time_length: int = 10
    mask_time_min_masks: int = 2
    mask_feature_prob: float = 0.0  # channel masking, used in fine-tuning
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0

    # Gumbel product quantizer and contrastive task.
    num_codevector_groups: int = 2  # G
    num_codevectors_per_group: int = 320  # V
    codevector_dim: int = 256  # width of a quantized vector (fairseq latent_dim)
    proj_codevector_dim: int = 256  # width of the contrastive space (fairseq final_dim)
    contrastive_logits_temperature: float = 0.1
    num_negatives: int = 100
    diversity_loss_weight: float = 0.1
    feature_penalty_weight: float = 10.0  # fairseq loss_weights[1]; HF has no feature penalty
    feature_grad_mult: float = 0.1  # scales the feature encoder's gradient (fairseq)

    # Downstream heads.
    vocab_size: int = 32  # CTC output classes (blank = pad_token_id)
    pad_token_id: int = 0
    num_labels: int = 2  # classes of the utterance classifier (language ID)
    classifier_proj_size: int = 256
    use_weighted_layer_sum: bool = False

    # Convolutional adapter after the Transformer (HF `Wav2Vec2Adapter`, the speech-translation
    # encoder of Babu et al. 2021 §5.1): GLU convolutions that shorten the frames
    # adapter_stride ** num_adapter_layers times, after a projection to output_hidden_size.
    add_adapter: bool = False
    num_adapter_layers: int = 3
    adapter_kernel_size: int = 3
    adapter_stride: int = 2
    output_hidden_size: int | None = None  # adapter width; None = hidden_size (HF's default)

    # Execution (not part of the published architecture).
    dtype: str = "float32"  # compute dtype; parameters stay float32
    scan_layers: bool = False  # nn.scan over Transformer blocks: one compiled block, fast compile
    remat: str = "none"  # gradient checkpointing of each block: "none", "full", "dots"
    attention_impl: str = "auto"  # dot_product_attention: "auto" (cuDNN on GPU in 16 bits, else XLA), "xla", "cudnn"

    def __post_init__(self):
        for name in _TUPLE_FIELDS:
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel):
            raise ValueError("conv_dim, conv_stride and conv_kernel must have the same length")
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError("hidden_size must be divisible by num_conv_pos_embedding_groups")
        if self.codevector_dim % self.num_codevector_groups:
            raise ValueError("codevector_dim must be divisible by num_codevector_groups")
        if self.remat not in ("none", "full", "dots"):
            raise ValueError(f"remat must be 'none', 'full' or 'dots', got {self.remat!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"unsupported dtype {self.dtype!r}")
        if self.add_adapter and (self.num_adapter_layers < 1 or self.adapter_stride < 1):
            raise ValueError("an adapter needs num_adapter_layers >= 1 and adapter_stride >= 1")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def adapter_hidden_size(self) -> int:
        """Width of the encoder output: output_hidden_size when set, else hidden_size (as HF)."""
        return self.output_hidden_size or self.hidden_size

    @property
    def encoder_output_size(self) -> int:
        """Width of `Wav2Vec2Model`'s last_hidden_state: the adapter's when there is one."""
        return self.adapter_hidden_size if self.add_adapter else self.hidden_size

    @property
    def num_codevectors(self) -> int:
        return self.num_codevector_groups * self.num_codevectors_per_group

    @property
    def compute_dtype(self):
        import jax.numpy as jnp

        return jnp.dtype(self.dtype)

    def feature_lengths(self, num_samples):
        """Frames the conv encoder produces for `num_samples` samples (int or integer array)."""
        lengths = num_samples
        for kernel, stride in zip(self.conv_kernel, self.conv_stride):
            lengths = (lengths - kernel) // stride + 1
        if isinstance(lengths, (int, np.integer)):
            return max(int(lengths), 0)
        return lengths

    def encoder_output_lengths(self, num_samples):
        """Frames of `Wav2Vec2Model`'s output: the conv frames, shortened by the adapter if any.

        Each adapter conv (padding 1, kernel 3, stride s) maps L frames to (L - 1) // s + 1, which
        is HF's `_get_feat_extract_output_lengths(add_adapter=True)` rule.
        """
        lengths = self.feature_lengths(num_samples)
        if self.add_adapter:
            for _ in range(self.num_adapter_layers):
                lengths = (lengths - 1) // self.adapter_stride + 1
        return lengths

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for name in _TUPLE_FIELDS:
            out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], strict: bool = True) -> Wav2Vec2Config:
        """Builds a config from a dict; unknown keys are an error unless `strict=False`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown and strict:
            raise ValueError(f"unknown Wav2Vec2Config fields: {unknown}")
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Wav2Vec2Config:
        return cls.from_dict(json.loads(text))


def _large(**overrides) -> Wav2Vec2Config:
    # fairseq examples/wav2vec/config/pretraining/wav2vec2_large_librivox.yaml and the XLSR-53 /
    # XLS-R releases: layer-norm extractor with conv bias, pre-LN Transformer, no feature penalty.
    values = dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        do_stable_layer_norm=True,
        conv_bias=True,
        feat_extract_norm="layer",
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.1,
        feat_quantizer_dropout=0.1,
        layerdrop=0.0,
        codevector_dim=768,
        proj_codevector_dim=768,
        feature_penalty_weight=0.0,
        feature_grad_mult=1.0,
    )
    values.update(overrides)
    return Wav2Vec2Config(**values)


def _presets() -> dict[str, Wav2Vec2Config]:
    return {
        # wav2vec 2.0 BASE / XLSR base (fairseq wav2vec2_base_librispeech.yaml): 95M parameters.
        "base": Wav2Vec2Config(feat_quantizer_dropout=0.1),
        # XLSR-53 and XLS-R 300M: 317M parameters.
        "large": _large(),
        # XLS-R 1B (965M) and 2B (2162M): Babu et al. 2021, Table 1; codevectors of width 1024.
        "xls_r_1b": _large(
            hidden_size=1280,
            num_hidden_layers=48,
            intermediate_size=5120,
            codevector_dim=1024,
            proj_codevector_dim=1024,
        ),
        "xls_r_2b": _large(
            hidden_size=1920,
            num_hidden_layers=48,
            intermediate_size=7680,
            codevector_dim=1024,
            proj_codevector_dim=1024,
        ),
        # For tests and the demo: same structure (XLS-R flags), small enough for a CPU in seconds.
        "tiny": _large(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            conv_dim=(64,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            num_codevectors_per_group=32,
            codevector_dim=64,
            proj_codevector_dim=32,
            num_negatives=20,
            mask_time_prob=0.65,
            mask_time_length=5,
        ),
    }


PRESET_NAMES = tuple(_presets())

# Published parameter counts of the pretraining models, used by the tests.
PUBLISHED_PARAMETERS = {"base": 95e6, "large": 317e6, "xls_r_1b": 965e6, "xls_r_2b": 2162e6}


def get_preset(name: str, **overrides) -> Wav2Vec2Config:
    """Returns the named preset (see `PRESET_NAMES`), with fields overridden by keyword."""
    presets = _presets()
    if name not in presets:
        raise ValueError(f"unknown model preset {name!r}; choose from {sorted(presets)}")
    return dataclasses.replace(presets[name], **overrides)
