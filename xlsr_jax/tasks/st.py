"""Speech translation (XLS-R §5.1, CoVoST-2): `config.task = "st"`.

The model is `Wav2Vec2ForSpeechTranslation`: the pretrained encoder (`wav2vec2/`), the conv
adapter and an mBART decoder. Targets are `[language token] pieces </s>` from the input
pipeline's "st" mode (`data.target`: an mBART-50-layout sentencepiece tokenizer); the decoder
reads them shifted right behind `decoder_start_token_id` (teacher forcing) and the loss is
fairseq's label-smoothed cross-entropy per target token, padding and filler rows ignored
(`losses.label_smoothed_cross_entropy`). As for CTC, the feature encoder is always frozen and the
rest of the encoder for the first `finetune.freeze_finetune_updates` updates; the adapter and the
decoder train from the first update.

Evaluation generates translations inside `jit` (`xlsr_jax.generation`, greedy or beam search;
each row's first token is forced to its target language) and reports BLEU and chrF overall and per
language pair (`<src>_<tgt>`) to TensorBoard through the trainer and a JSON report per evaluation
under `<workdir>/eval/`.

Config sections beyond the fine-tuning ones: `decoder` (`MBartDecoderConfig` fields;
`vocab_size` 0 = the tokenizer's), `st` (label smoothing, evaluation search), and
`init.decoder` (a transformers mBART folder, e.g. facebook/mbart-large-50, or a translation
export whose decoder initialises ours; used with `init.checkpoint`, the encoder's source).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xlsr_jax.tasks import finetune
from xlsr_jax.tasks.ctc import resolve_languages

log = logging.getLogger("xlsr_jax.tasks")

PyTree = Any


def decoder_config_for(config: ml_collections.ConfigDict, vocab_size: int):
    """The `MBartDecoderConfig` of a run: `config.decoder` with the resolved vocabulary size and
    the encoder's compute dtype (one dtype knob for the whole model)."""
    from xlsr_jax.models.decoder import MBartDecoderConfig

    return MBartDecoderConfig.from_dict(
        {**config.decoder.to_dict(), "vocab_size": vocab_size, "dtype": config.model.dtype}
    )


class SpeechTranslationTask(finetune.FinetuneTask):
    """Fine-tunes `Wav2Vec2ForSpeechTranslation` with label-smoothed cross-entropy; BLEU/chrF eval."""

    name = "st"
    architecture = "Wav2Vec2ForSpeechTranslation"
    data_task = "st"

    def __init__(self, config: ml_collections.ConfigDict):
        """Builds the target tokenizer from `config.data.target`, then the model.

        Raises:
          ValueError: no tokenizer (and no `decoder.vocab_size`), a `decoder.vocab_size` other than
            the tokenizer's, or
            `init.decoder` without `init.checkpoint`.
        """
        import data_pipelines
        from xlsr_jax import generation
        from xlsr_jax.models import Wav2Vec2Config
        from xlsr_jax.models.speech_translation import SpeechTranslationConfig, Wav2Vec2ForSpeechTranslation

        if not config.data.target.tokenizer and config.decoder.vocab_size:
            # Compiling without data (experiments/aot_compile.py): the vocabulary size is given;
            # evaluation, which decodes text, then has no tokenizer.
            self.tokenizer, vocab_size = None, int(config.decoder.vocab_size)
        else:
            self.tokenizer = data_pipelines.build_target_tokenizer(config.data)
            vocab_size = config.decoder.vocab_size or self.tokenizer.vocab_size
        if self.tokenizer is not None and vocab_size != self.tokenizer.vocab_size:
            raise ValueError(
                f"config.decoder.vocab_size is {vocab_size} but the tokenizer data.target.tokenizer has "
                f"{self.tokenizer.vocab_size} ids; pass --config.decoder.vocab_size=0 (the tokenizer's)"
            )
        if config.init.get("decoder") and not config.init.checkpoint:
            raise ValueError("init.decoder initialises the decoder together with init.checkpoint (the encoder)")
        self.languages = resolve_languages(config.data)
        encoder = Wav2Vec2Config.from_dict({**config.model.to_dict(), "add_adapter": True})
        self.model_config = SpeechTranslationConfig(encoder, decoder_config_for(config, vocab_size))
        self.model = Wav2Vec2ForSpeechTranslation(self.model_config)
        self.init_samples = int(config.train.init_num_samples)
        # Task's config.init.partial: restore only the parameters of init.checkpoint that fit.
        self.init_partial = bool(config.get("init", {}).get("partial", False))
        # FinetuneTask's fields (its __init__ builds a Wav2Vec2Config-only model, so not called).
        self.freeze_updates = int(config.finetune.freeze_finetune_updates)
        self.freeze_feature_encoder = encoder.feature_grad_mult <= 0.0
        self._jitted_eval_outputs = None
        self.label_smoothing = float(config.st.label_smoothing)
        self.report_examples = int(config.finetune.get("report_examples", 4))
        self.init_decoder = config.init.get("decoder", "")
        max_length = min(int(config.st.eval_max_length), self.model_config.decoder.max_position_embeddings)
        self.generation = generation.GenerationConfig(
            max_length=max_length,
            num_beams=int(config.st.eval_beams),
            length_penalty=float(config.st.eval_length_penalty),
            decoder_start_token_id=self.model_config.decoder_start_token_id,
            eos_token_id=self.model_config.eos_token_id,
            pad_token_id=self.model_config.pad_token_id,
        )

    # --- Parameters.

    def example_batch(self) -> dict[str, np.ndarray]:
        """Silence and a 4-token target: shapes only."""
        batch = super().example_batch()
        batch["labels"] = np.full((1, 4), self.model_config.pad_token_id, np.int32)
        batch["label_padding"] = np.ones((1, 4), bool)
        return batch

    def init_params(self, rng: jax.Array, batch) -> PyTree:
        """Boxed parameters of encoder, adapter and decoder."""
        variables = self.model.init(
            {"params": rng, **self.rngs(jax.random.fold_in(rng, 1))},
            jnp.asarray(batch["audio"]),
            jnp.asarray(batch["padding_mask"]),
            jnp.asarray(batch["labels"]),
            deterministic=True,
        )
        return variables["params"]

    def restore_init_params(self, path, abstract_params, fresh_params):
        """The encoder (and whatever else matches) from `path`, then the decoder from `init.decoder`."""
        params = finetune.restore_init_params(path, abstract_params, fresh_params)
        if self.init_decoder:
            decoder = load_decoder_params(self.init_decoder, self.model_config.decoder)
            shardings = jax.tree.map(lambda a: a.sharding, abstract_params["decoder"])
            params = {**params, "decoder": jax.device_put(decoder, shardings)}
            log.info("decoder initialised from %s", self.init_decoder)
        return params

    # --- Steps (inside jit).

    def _targets(self, batch) -> tuple[jax.Array, jax.Array]:
        """(labels with <pad> at padding and in filler rows, decoder inputs shifted right)."""
        from xlsr_jax.models.speech_translation import shift_tokens_right

        cfg = self.model_config
        real = ~batch["label_padding"] & (finetune.row_weights(batch)[:, None] > 0)
        labels = jnp.where(real, batch["labels"], cfg.pad_token_id)  # int32 [B, L]
        return labels, shift_tokens_right(labels, cfg.pad_token_id, cfg.decoder_start_token_id)

    def _loss(self, params, batch, rng, deterministic: bool):
        from xlsr_jax import losses

        labels, decoder_inputs = self._targets(batch)
        logits = self.model.apply(  # float32 [B, L, vocab]
            {"params": params},
            batch["audio"],
            batch["padding_mask"],
            decoder_inputs,
            deterministic=deterministic,
            rngs=self.rngs(rng),
        )
        loss_sum, nll_sum, tokens = losses.label_smoothed_cross_entropy(
            logits, labels, self.model_config.pad_token_id, self.label_smoothing
        )
        denom = jnp.maximum(tokens, 1.0)
        return loss_sum / denom, {"nll_loss": nll_sum / denom, "target_tokens": tokens}

    def loss(self, params, batch, rng, num_updates):
        """Label-smoothed cross-entropy per target token, with dropout and masking."""
        params, encoder_frozen = self.encoder_frozen(params, num_updates)
        loss, metrics = self._loss(params, batch, rng, deterministic=False)
        return loss, {"st_loss": loss, **metrics, "encoder_frozen": encoder_frozen}

    def eval_metrics(self, params, batch, rng):
        """Deterministic loss and token-level NLL."""
        loss, metrics = self._loss(params, batch, rng, deterministic=True)
        return {"st_loss": loss, "nll_loss": metrics["nll_loss"]}

    def eval_outputs(self, params, batch):
        """Generated ids (int32 [B, max_length]) and their lengths; the first generated token of
        each row is its reference's language token."""
        from xlsr_jax import generation

        out = generation.generate(
            self.model, params, batch["audio"], batch["padding_mask"], self.generation, batch["labels"][:, 0]
        )
        return {"sequences": out.sequences, "lengths": out.lengths}

    # --- Host side.

    def eval_report(
        self,
        records: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
        step: int,
        workdir: str | None,
    ) -> dict[str, float]:
        """BLEU and chrF overall and per pair; writes `<workdir>/eval/st_<step>.json` when given."""
        if self.tokenizer is None:
            raise ValueError("BLEU needs the target tokenizer: set data.target.tokenizer")
        report = st_report(records, self.tokenizer, self.languages, self.report_examples)
        if workdir:
            path = os.path.join(workdir, "eval", f"st_{step}.json")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"step": step, **report["scores_json"]}, f, indent=2, ensure_ascii=False)
        return report["metrics"]


def target_locale(tokenizer, token_id: int) -> str:
    """The target language of a language-token id, as a locale when one maps to it ('en')."""
    from data_pipelines import translation

    code = next((c for c, i in tokenizer.language_ids.items() if i == int(token_id)), f"id{int(token_id)}")
    return next((loc for loc, c in translation.LOCALE_TO_MBART50.items() if c == code), code)


def st_report(records, tokenizer, languages: Sequence[str], num_examples: int = 4) -> dict[str, Any]:
    """Decodes eval records and scores them.

    Args:
      records: (host batch with labels/label_padding/language/valid, {"sequences", "lengths"}) pairs.
      tokenizer: the target `TargetTokenizer`.
      languages: source language codes by id.
      num_examples: reference/hypothesis pairs kept per language pair.
    Returns:
      {"metrics": {"bleu", "chrf", "bleu/<pair>", "chrf/<pair>"}, "scores_json": per-pair scores
       and examples for the JSON report}.
    """
    from xlsr_jax import decoding

    refs, hyps, pairs = [], [], []
    for batch, out in records:
        keep = finetune.host_valid(batch)
        for row in np.flatnonzero(keep):
            labels = np.asarray(batch["labels"][row])[~np.asarray(batch["label_padding"][row])]
            refs.append(tokenizer.decode(labels))
            hyps.append(tokenizer.decode(np.asarray(out["sequences"][row])[: int(out["lengths"][row])]))
            src = languages[int(batch["language"][row])]
            pairs.append(f"{src}_{target_locale(tokenizer, labels[0]) if labels.size else 'und'}")
    if not refs:
        return {"metrics": {}, "scores_json": {"pairs": {}, "examples": []}}
    scores = decoding.translation_scores_by_pair(refs, hyps, pairs)
    metrics = {"bleu": scores["all"]["bleu"], "chrf": scores["all"]["chrf"]}
    for pair, s in scores.items():
        if pair != "all":
            metrics[f"bleu/{pair}"] = s["bleu"]
            metrics[f"chrf/{pair}"] = s["chrf"]
    examples, seen = [], {}
    for r, h, p in zip(refs, hyps, pairs):
        if seen.get(p, 0) < num_examples:
            seen[p] = seen.get(p, 0) + 1
            examples.append({"pair": p, "reference": r, "hypothesis": h})
    return {"metrics": metrics, "scores_json": {"pairs": scores, "examples": examples}}


def load_decoder_params(path: str, decoder_config) -> PyTree:
    """Decoder parameters (host numpy) from a transformers folder holding an mBART decoder
    (MBartForConditionalGeneration such as facebook/mbart-large-50, MBartForCausalLM, or a
    SpeechEncoderDecoderModel), or from one of our translation checkpoints.

    Raises:
      ValueError / CheckpointMismatchError when the decoder there does not match `decoder_config`.
    """
    from xlsr_jax import fileio, pretrained
    from xlsr_jax.convert import hf_io
    from xlsr_jax.convert import speech_translation as st

    if fileio.isfile(fileio.join(path, hf_io.CONFIG)):
        return st.mbart_decoder_params(hf_io.read_hf_state(path), decoder_config)
    loaded = pretrained.load_pretrained(path)
    if loaded.architecture != pretrained.SPEECH_TRANSLATION:
        raise ValueError(f"{path}: a {loaded.architecture} checkpoint has no decoder")
    return loaded.params["decoder"]
