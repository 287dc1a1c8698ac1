"""Language identification: `config.task = "lid"`, the third XLS-R downstream task.

The model is `Wav2Vec2ForSequenceClassification`: the pretrained encoder, a projection, mean
pooling over valid frames and a linear classifier over `data.languages` (label = the batch's
"language" id). Trained with cross-entropy; evaluation reports accuracy overall and per language
(TensorBoard) and a JSON report with the confusion matrix under `<workdir>/eval/`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from xlsr_jax import fileio
from xlsr_jax.tasks import finetune


class LidTask(finetune.FinetuneTask):
    """Fine-tunes `Wav2Vec2ForSequenceClassification` on utterance language labels."""

    name = "lid"
    architecture = "Wav2Vec2ForSequenceClassification"
    data_task = "lid"

    def __init__(self, config: ml_collections.ConfigDict):
        """Builds the classifier over `config.data.languages`.

        Raises:
          ValueError: `data.languages` is empty (the label order must be fixed in the config so a
            checkpoint's classes stay meaningful) or differs in length from `model.num_labels`.
        """
        self.languages = list(config.data.languages)
        if not self.languages:
            raise ValueError("task 'lid' needs config.data.languages (the class order)")
        if config.model.num_labels != len(self.languages):
            raise ValueError(
                f"config.model.num_labels is {config.model.num_labels} but "
                f"config.data.languages has {len(self.languages)} entries"
            )
        super().__init__(config)

    def _metrics(self, params, batch, rng, deterministic):
        logits = self.model.apply(
            {"params": params},
            batch["audio"],
            batch["padding_mask"],
            deterministic=deterministic,
            rngs=self.rngs(rng),
        )  # [B, labels]
        weights = finetune.row_weights(batch)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["language"])
        loss = finetune.weighted_mean(nll, weights)
        accuracy = finetune.weighted_mean(jnp.argmax(logits, -1) == batch["language"], weights)
        return loss, {"lid_loss": loss, "accuracy": accuracy}

    def loss(self, params, batch, rng, num_updates):
        """Cross-entropy over languages, training mode (dropout, LayerDrop, channel masking)."""
        params, encoder_frozen = self.encoder_frozen(params, num_updates)
        loss, metrics = self._metrics(params, batch, rng, deterministic=False)
        metrics["encoder_frozen"] = encoder_frozen
        return loss, metrics

    def eval_metrics(self, params, batch, rng):
        """Deterministic loss (accuracy comes exact over the whole pass from `eval_report`)."""
        return {"lid_loss": self._metrics(params, batch, rng, deterministic=True)[0]}

    def eval_outputs(self, params, batch):
        """Class probabilities float32 [batch, languages]."""
        logits = self.model.apply({"params": params}, batch["audio"], batch["padding_mask"], deterministic=True)
        return {"probs": jax.nn.softmax(logits, axis=-1)}

    def eval_report(self, records, step: int, workdir: str | None) -> dict[str, float]:
        """Exact accuracy over the pass (overall, per language); JSON with the confusion matrix."""
        report = lid_report(records, self.languages)
        if workdir:
            import json

            path = fileio.join(workdir, "eval", f"lid_{step}.json")
            fileio.write_text(path, json.dumps({"step": step, **report}, indent=2))  # local or gs://
        metrics = {"accuracy": report["accuracy"]}
        metrics.update({f"accuracy/{lang}": acc for lang, acc in report["per_language"].items()})
        return metrics


def lid_report(
    records: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]], languages: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-language accuracy and confusion matrix (rows: true, columns: predicted)."""
    n = len(languages)
    confusion = np.zeros((n, n), np.int64)
    for batch, out in records:
        keep = finetune.host_valid(batch)
        pred = np.argmax(np.asarray(out["probs"]), axis=-1)[keep]
        true = np.asarray(batch["language"])[keep]
        np.add.at(confusion, (true, pred), 1)
    total = int(confusion.sum())
    per_language = {
        lang: float(confusion[i, i] / confusion[i].sum()) for i, lang in enumerate(languages) if confusion[i].sum()
    }
    return {
        "accuracy": float(np.trace(confusion) / total) if total else float("nan"),
        "utterances": total,
        "chance": 1.0 / n,
        "per_language": per_language,
        "languages": list(languages),
        "confusion": confusion.tolist(),
    }
