"""CTC fine-tuning (speech recognition): `config.task = "ctc"`.

The model is `Wav2Vec2ForCTC`: the pretrained encoder plus a linear head over a character
vocabulary (`data_pipelines.Vocabulary`: one shared multilingual vocabulary built from the train
transcripts, or `data.vocabulary.path`). The loss is fairseq's `ctc` criterion with
`sentence_avg: true` and `zero_infinity: true`: the mean over utterances of each utterance's CTC
loss. Evaluation decodes greedily and reports WER and CER per language (TensorBoard through the
trainer, and a JSON report per evaluation under `<workdir>/eval/`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from xlsr_jax import decoding
from xlsr_jax.tasks import finetune

log = logging.getLogger(__name__)


def resolve_languages(data_cfg: ml_collections.ConfigDict) -> list[str]:
    """Language codes in the input pipeline's id order (`data.languages`, else the train split's)."""
    if data_cfg.languages:
        return list(data_cfg.languages)
    from data_pipelines import pipeline

    return pipeline.languages(data_cfg)  # the rule the pipeline applies


def vocabulary_for(data_cfg: ml_collections.ConfigDict):
    """The CTC vocabulary of a data config (what the input pipeline encodes labels with)."""
    import data_pipelines

    return data_pipelines.build_vocabulary(data_cfg)


class CtcTask(finetune.FinetuneTask):
    """Fine-tunes `Wav2Vec2ForCTC` with the CTC loss; evaluates with greedy decoding."""

    name = "ctc"
    architecture = "Wav2Vec2ForCTC"
    data_task = "ctc"

    def __init__(self, config: ml_collections.ConfigDict):
        """Builds the vocabulary from `config.data`, the model from `config.model`.

        `config.model.vocab_size` 0 means "the vocabulary's size" (the fine-tuning recipes); the
        resolved size is what the model gets and what the checkpoints record.

        Raises:
          ValueError: a non-zero `config.model.vocab_size` differs from the vocabulary's size.
        """
        self.vocabulary = vocabulary_for(config.data)
        self.languages = resolve_languages(config.data)
        vocab_size = config.model.vocab_size or len(self.vocabulary)
        if vocab_size != len(self.vocabulary):
            raise ValueError(
                f"config.model.vocab_size is {vocab_size} but the vocabulary of config.data has "
                f"{len(self.vocabulary)} tokens; pass --config.model.vocab_size={len(self.vocabulary)} "
                "(or 0: the vocabulary's size)"
            )
        if config.model.pad_token_id != self.vocabulary.blank_id:
            raise ValueError("model.pad_token_id must be the vocabulary's blank id (0)")
        super().__init__(config, vocab_size=vocab_size)
        self.report_examples = int(config.finetune.get("report_examples", 4))

    # --- Trainer interface.

    def _loss(self, params, batch, rng, deterministic: bool):
        from xlsr_jax import losses

        logits, frame_padding = self.model.apply(  # [B, T, vocab], [B, T]
            {"params": params}, batch["audio"], batch["padding_mask"], deterministic=deterministic, rngs=self.rngs(rng)
        )
        per_seq, _ = losses.ctc_loss(
            logits, frame_padding, batch["labels"], batch["label_padding"], blank_id=self.vocabulary.blank_id
        )
        return finetune.weighted_mean(per_seq, finetune.row_weights(batch))

    def loss(self, params, batch, rng, num_updates):
        """Mean CTC loss per utterance with dropout, LayerDrop, time and channel masking."""
        params, encoder_frozen = self.encoder_frozen(params, num_updates)
        loss = self._loss(params, batch, rng, deterministic=False)
        return loss, {"ctc_loss": loss, "encoder_frozen": encoder_frozen}

    def eval_metrics(self, params, batch, rng):
        """Deterministic CTC loss."""
        return {"ctc_loss": self._loss(params, batch, rng, deterministic=True)}

    def eval_outputs(self, params, batch):
        """Greedy per-frame ids (int32 [batch, frames], blank at padding) for host decoding."""
        logits, frame_padding = self.model.apply(
            {"params": params}, batch["audio"], batch["padding_mask"], deterministic=True
        )
        return {"ids": decoding.greedy_ids(logits, frame_padding, self.vocabulary.blank_id)}

    def eval_report(
        self,
        records: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
        step: int,
        workdir: str | None,
    ) -> dict[str, float]:
        """WER/CER overall and per language; writes `<workdir>/eval/ctc_<step>.json` when given."""
        report = ctc_report(records, self.vocabulary, self.languages, self.report_examples)
        if workdir:
            path = os.path.join(workdir, "eval", f"ctc_{step}.json")
            decoding.write_report(path, report["counts"], step=step, examples=report["examples"])
        return report["metrics"]


def ctc_report(records, vocabulary, languages: Sequence[str], num_examples: int = 4) -> dict[str, Any]:
    """Decodes eval records and scores them.

    Args:
      records: (host batch with labels/label_padding/language/valid, {"ids": [B, T]}) pairs.
      vocabulary: the CTC vocabulary.
      languages: language codes by id.
      num_examples: reference/hypothesis pairs kept per language for the report.
    Returns:
      {"metrics": {"wer", "cer", "wer/<lang>", "cer/<lang>"}, "counts": {lang: ErrorCounts},
       "examples": [{"language", "reference", "hypothesis"}]}.
    """
    refs, hyps, langs = [], [], []
    for batch, out in records:
        keep = finetune.host_valid(batch)
        texts = decoding.label_texts(batch["labels"], batch["label_padding"], vocabulary)
        refs += [r for r, k in zip(texts, keep) if k]
        hyps += [h for h, k in zip(decoding.greedy_decode(out["ids"], vocabulary), keep) if k]
        langs += [languages[int(i)] for i, k in zip(batch["language"], keep) if k]
    counts = decoding.error_rates_by_language(refs, hyps, langs)
    metrics = {}
    # A rate over no reference words is undefined: leave it out and say why rather than log NaN.
    empty = sorted({lang for lang in langs if not counts[lang].words})
    if empty:
        n = sum(lang in empty for lang in langs)
        log.warning(
            "eval: all %d references of %s are empty after decoding the labels with the vocabulary, "
            "so no WER/CER is reported for %s. Labels that are all <unk> or special tokens decode to "
            "nothing: check that data.vocabulary.path agrees with the transcript normaliser "
            "(data.text.per_language).",
            n,
            "every language" if not counts["all"].words else "language(s) " + ", ".join(empty),
            "them" if counts["all"].words else "the eval",
        )
    for lang, c in counts.items():
        if c.words:
            suffix = "" if lang == "all" else f"/{lang}"
            metrics[f"wer{suffix}"] = c.wer
            metrics[f"cer{suffix}"] = c.cer
    examples, seen = [], {}
    for r, h, lang in zip(refs, hyps, langs):
        if seen.get(lang, 0) < num_examples:
            seen[lang] = seen.get(lang, 0) + 1
            examples.append({"language": lang, "reference": r, "hypothesis": h})
    return {"metrics": metrics, "counts": counts, "examples": examples}
