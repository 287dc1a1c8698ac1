"""CTC fine-tuning (speech recognition): `config.task = "ctc"`.

The model is `Wav2Vec2ForCTC`: the pretrained encoder plus a linear head over a character
vocabulary (`data_pipelines.Vocabulary`: one shared multilingual vocabulary built from the train
transcripts, or `data.vocabulary.path`). The loss is fairseq's `ctc` criterion with
`sentence_avg: true` and `zero_infinity: true`: the mean over utterances of each utterance's CTC
loss. Evaluation decodes greedily and reports WER and CER per language (TensorBoard through the
trainer, and a JSON report per evaluation under `<workdir>/eval/`); with `eval.lm` (a KenLM file)
it also decodes with the LM beam search (`xlsr_jax.lm`) and reports `wer_lm`/`cer_lm` beside them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
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
        self.lm_settings = lm_settings(config)
        self._beam = None

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
        out = {"ids": decoding.greedy_ids(logits, frame_padding, self.vocabulary.blank_id)}
        if self.lm_settings:  # the beam search reads log-probabilities on the host
            out["log_probs"] = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
            out["frame_padding"] = frame_padding
        return out

    def beam_decoder(self):
        """The LM beam-search decoder of `eval.lm` (built once), or None without one."""
        if self.lm_settings and self._beam is None:
            from xlsr_jax import lm

            self._beam = lm.BeamSearchDecoder(decoding.CTCLabels.of_vocabulary(self.vocabulary), **self.lm_settings)
        return self._beam

    def eval_report(
        self,
        records: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
        step: int,
        workdir: str | None,
    ) -> dict[str, float]:
        """WER/CER overall and per language; writes `<workdir>/eval/ctc_<step>.json` when given."""
        report = ctc_report(records, self.vocabulary, self.languages, self.report_examples, self.beam_decoder())
        if workdir:
            path = os.path.join(workdir, "eval", f"ctc_{step}.json")
            extra = None
            if report["counts_lm"] is not None:
                extra = {"per_language_lm": {k: v.as_dict() for k, v in report["counts_lm"].items()}}
            decoding.write_report(path, report["counts"], step=step, examples=report["examples"], extra=extra)
        return report["metrics"]


def lm_settings(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
    """`lm.BeamSearchDecoder` keyword arguments from `config.eval` (None when `eval.lm` is unset)."""
    ev = config.get("eval") or {}
    if not ev.get("lm"):
        return None
    from xlsr_jax import lm

    return {
        "lm": ev.lm,
        "lexicon": ev.get("lm_lexicon") or None,
        "alpha": float(ev.get("lm_alpha", lm.DEFAULT_ALPHA)),
        "beta": float(ev.get("lm_beta", lm.DEFAULT_BETA)),
        "beam_width": int(ev.get("lm_beam_width", lm.DEFAULT_BEAM_WIDTH)),
    }


def _add_rates(metrics: dict[str, float], counts: Mapping[str, decoding.ErrorCounts], suffix: str = "") -> None:
    # A rate over no reference words is undefined: it is left out (`_warn_empty_references`
    # says why) rather than logged as NaN.
    for lang, c in counts.items():
        if c.words:
            metrics[f"wer{suffix}" if lang == "all" else f"wer{suffix}/{lang}"] = c.wer
            metrics[f"cer{suffix}" if lang == "all" else f"cer{suffix}/{lang}"] = c.cer


def _warn_empty_references(counts: Mapping[str, decoding.ErrorCounts], langs: Sequence[str]) -> None:
    """Warns when every reference of the eval (or of some language) decodes to nothing."""
    empty = sorted({lang for lang in langs if not counts[lang].words})
    if not empty:
        return
    log.warning(
        "eval: all %d references of %s are empty after decoding the labels with the vocabulary, "
        "so no WER/CER is reported for %s. Labels that are all <unk> or special tokens decode to "
        "nothing: check that data.vocabulary.path agrees with the transcript normaliser "
        "(data.text.per_language).",
        sum(lang in empty for lang in langs),
        "every language" if not counts["all"].words else "language(s) " + ", ".join(empty),
        "them" if counts["all"].words else "the eval",
    )


def ctc_report(records, vocabulary, languages: Sequence[str], num_examples: int = 4, beam=None) -> dict[str, Any]:
    """Decodes eval records and scores them.

    Args:
      records: (host batch with labels/label_padding/language/valid, {"ids": [B, T]}) pairs; with
        `beam`, the outputs also hold "log_probs" [B, T, V] and "frame_padding" [B, T].
      vocabulary: the CTC vocabulary.
      languages: language codes by id.
      num_examples: reference/hypothesis pairs kept per language for the report.
      beam: an `lm.BeamSearchDecoder` for the LM columns, or None.
    Returns:
      {"metrics": {"wer", "cer", "wer/<lang>", "cer/<lang>"} (+ "wer_lm", "cer_lm", ... with a
       beam), "counts": {lang: ErrorCounts}, "counts_lm": the same for the beam (or None),
       "examples": [{"language", "reference", "hypothesis"}], "utterances": every
       {"language", "reference", "hypothesis"[, "hypothesis_lm"]}}.
    """
    refs, hyps, hyps_lm, langs = [], [], [], []
    for batch, out in records:
        keep = finetune.host_valid(batch)
        texts = decoding.label_texts(batch["labels"], batch["label_padding"], vocabulary)
        refs += [r for r, k in zip(texts, keep) if k]
        hyps += [h for h, k in zip(decoding.greedy_decode(out["ids"], vocabulary), keep) if k]
        if beam is not None:
            beamed = beam.decode(out["log_probs"], out["frame_padding"])
            hyps_lm += [h for h, k in zip(beamed, keep) if k]
        langs += [languages[int(i)] for i, k in zip(batch["language"], keep) if k]
    counts = decoding.error_rates_by_language(refs, hyps, langs)
    metrics: dict[str, float] = {}
    _warn_empty_references(counts, langs)
    _add_rates(metrics, counts)
    counts_lm = None
    if beam is not None:
        counts_lm = decoding.error_rates_by_language(refs, hyps_lm, langs)
        _add_rates(metrics, counts_lm, "_lm")
    utterances = [{"language": lang, "reference": r, "hypothesis": h} for r, h, lang in zip(refs, hyps, langs)]
    for row, h in zip(utterances, hyps_lm):
        row["hypothesis_lm"] = h
    examples, seen = [], {}
    for row in utterances:
        lang = row["language"]
        if seen.get(lang, 0) < num_examples:
            seen[lang] = seen.get(lang, 0) + 1
            examples.append(row)
    return {
        "metrics": metrics,
        "counts": counts,
        "counts_lm": counts_lm,
        "examples": examples,
        "utterances": utterances,
    }
