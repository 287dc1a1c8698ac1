"""The wav2vec 2.0 / XLSR / XLS-R network: config, building blocks and models."""

from xlsr_jax.models.config import ARCHITECTURES, PRESET_NAMES, PUBLISHED_PARAMETERS, Wav2Vec2Config, get_preset
from xlsr_jax.models.decoder import Decoder, MBartDecoderConfig
from xlsr_jax.models.feature_encoder import FeatureEncoder
from xlsr_jax.models.quantizer import GumbelVectorQuantizer
from xlsr_jax.models.speech_translation import SpeechTranslationConfig, Wav2Vec2ForSpeechTranslation
from xlsr_jax.models.transformer import Encoder, PositionalConvEmbedding
from xlsr_jax.models.wav2vec2 import (
    PretrainingOutput,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2ForSequenceClassification,
    Wav2Vec2Model,
    Wav2Vec2Output,
    contrastive_logits,
)


def model_class(architecture: str):
    """Our flax module class for a transformers architecture name.

    Raises:
      ValueError: `architecture` is not one of `ARCHITECTURES`.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")
    return globals()[architecture]


__all__ = [
    "ARCHITECTURES",
    "model_class",
    "PRESET_NAMES",
    "PUBLISHED_PARAMETERS",
    "Wav2Vec2Config",
    "get_preset",
    "FeatureEncoder",
    "GumbelVectorQuantizer",
    "Encoder",
    "PositionalConvEmbedding",
    "PretrainingOutput",
    "Wav2Vec2ForCTC",
    "Wav2Vec2ForPreTraining",
    "Wav2Vec2ForSequenceClassification",
    "Wav2Vec2ForSpeechTranslation",
    "SpeechTranslationConfig",
    "MBartDecoderConfig",
    "Decoder",
    "Wav2Vec2Model",
    "Wav2Vec2Output",
    "contrastive_logits",
]
