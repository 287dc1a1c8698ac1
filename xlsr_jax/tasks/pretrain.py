"""wav2vec 2.0 / XLSR self-supervised pretraining: `config.task = "pretrain"`.

The model is `Wav2Vec2ForPreTraining`; the loss is fairseq's `wav2vec` criterion: contrastive +
`diversity_loss_weight` x diversity (+ feature penalty), with the Gumbel temperature annealed per
update (`config.train.gumbel_*`).
"""

from __future__ import annotations

import ml_collections

from xlsr_jax import schedules
from xlsr_jax.tasks.base import Batch, Task


def drop_invalid_rows(out, batch: Batch):
    """Takes filler rows (batch["valid"] False: end of an eval pass, stand-ins for undecodable
    files) out of the contrastive loss by unmasking all their frames."""
    if "valid" not in batch:
        return out
    return out._replace(mask_time_indices=out.mask_time_indices & batch["valid"][:, None])  # [B, T]


class PretrainTask(Task):
    """Contrastive + diversity (+ feature penalty) pretraining of `Wav2Vec2ForPreTraining`."""

    name = "pretrain"
    architecture = "Wav2Vec2ForPreTraining"
    data_task = "pretrain"
    rng_streams = ("dropout", "gumbel", "mask")

    def __init__(self, config: ml_collections.ConfigDict):
        """Builds the model from `config.model` and the temperature schedule from `config.train`."""
        super().__init__(config)
        self.temperature = schedules.gumbel_temperature(
            config.train.gumbel_max_temperature,
            config.train.gumbel_min_temperature,
            config.train.gumbel_temperature_decay,
        )
        self.collapse_fraction = config.train.codebook_collapse_fraction

    def loss(self, params, batch, rng, num_updates):
        """The pretraining loss with dropout, Gumbel noise and fresh masks; temperature annealed."""
        from xlsr_jax import losses

        temperature = self.temperature(num_updates)
        out = self.model.apply(
            {"params": params},
            batch["audio"],
            batch["padding_mask"],  # [B, S]
            gumbel_temperature=temperature,
            deterministic=False,
            rngs=self.rngs(rng),
        )
        loss, metrics = losses.pretraining_loss(drop_invalid_rows(out, batch), self.model_config)
        metrics["gumbel_temperature"] = temperature
        return loss, metrics

    def eval_metrics(self, params, batch, rng):
        """Deterministic loss on held-out audio (masks and distractors drawn from a fixed key)."""
        from xlsr_jax import losses

        out = self.model.apply(
            {"params": params}, batch["audio"], batch["padding_mask"], deterministic=True, rngs=self.rngs(rng)
        )
        _, metrics = losses.pretraining_loss(drop_invalid_rows(out, batch), self.model_config)
        return metrics

    def check_metrics(self, metrics):
        """Warns when the codebook collapses: code perplexity below a fraction of G x V."""
        num_codes = self.model_config.num_codevectors
        perplexity = metrics.get("train/code_perplexity")
        if perplexity is not None and perplexity < self.collapse_fraction * num_codes:
            return [
                (
                    f"codebook collapse: code perplexity {perplexity:.1f} is below "
                    f"{self.collapse_fraction:.0%} of the {num_codes} codevectors (G x V); the "
                    "quantizer uses few entries. Usual remedies: raise diversity_loss_weight, keep "
                    "the Gumbel temperature higher for longer, lower the learning rate."
                )
            ]
        return []
