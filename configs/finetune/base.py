"""Shared builder for the fine-tuning recipes (CTC speech recognition, language ID).

The recipe is fairseq's wav2vec 2.0 / XLSR fine-tuning (`examples/wav2vec/config/finetuning/
vox_*.yaml`, the LARGE models; the XLS-R variant is `examples/wav2vec/xlsr/config/finetune.yaml`,
see `XLSR_ASR_*` below), with the learning rate and masking set per benchmark:

* CTC criterion with `sentence_avg: true`, `zero_infinity: true`;
* Adam, betas (0.9, 0.98), eps 1e-8, no weight decay, no gradient clipping (fairseq defaults);
* tri-stage learning rate: phase_ratio (0.1, 0.4, 0.5), init_lr_scale 0.01, final_lr_scale 0.05;
* feature encoder frozen (`feature_grad_mult: 0.0`), the rest frozen for the first
  `freeze_finetune_updates` (10000 in every vox_* recipe), only the head trains then;
* time masking (mask_prob 0.5-0.75, length 10), channel masking (mask_channel_prob 0.25-0.5,
  length 64), LayerDrop 0.1, activation dropout 0.1; fairseq's fine-tuning model defaults
  (`Wav2Vec2AsrConfig`) turn the other dropouts off: dropout 0, attention_dropout 0,
  dropout_input 0, final_dropout 0.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from configs import common


def finetune_config(
    *,
    task: str,
    model: dict[str, Any],
    data: ml_collections.ConfigDict,
    total_steps: int,
    lr: float,
    freeze_finetune_updates: int,
    init_checkpoint: str = "",
    preset: str = "",
) -> ml_collections.ConfigDict:
    """A complete fine-tuning config: `configs.common.base_config` plus the recipe's optimizer
    and schedule, and a `finetune` section.

    Args:
      task: "ctc" or "lid".
      model: `Wav2Vec2Config.to_dict()` with the recipe's regularisation already applied (the
        architecture must match the checkpoint in `init.checkpoint`); see `finetune_model`.
      data: input config; for "lid" `data.languages` fixes the class order.
      total_steps: updates (fairseq max_update); the tri-stage schedule spans them.
      lr: peak learning rate.
      freeze_finetune_updates: updates with the pretrained model frozen (only the head trains).
      init_checkpoint: pretrained checkpoint (run, step or exported directory).
      preset: the encoder's `xlsr_jax.models.get_preset` name; the 1B/2B ones (`FSDP_PRESETS`)
        shard parameters and Adam moments over all devices, as their pretraining (configs/xls_r.py).
    Returns:
      ConfigDict.
    """
    # xlsr_jax.tasks: "ctc" (Wav2Vec2ForCTC) or "lid" (sequence classification).
    config = common.base_config(task=task, model=model, data=data, total_steps=total_steps, lr=lr)

    # fairseq adam for fine-tuning: eps 1e-8, no weight decay, no clipping.
    config.optim.eps = 1e-8
    config.optim.weight_decay = 0.0
    config.optim.clip_grad_norm = 0.0
    config.optim.schedule = "tri_stage"  # warmup / hold / exponential decay
    config.optim.phase_ratio = (0.1, 0.4, 0.5)  # fractions of total_steps per stage
    config.optim.init_lr_scale = 0.01  # warmup starts at lr * this
    config.optim.final_lr_scale = 0.05  # decay ends at lr * this

    config.finetune = ml_collections.ConfigDict()
    # Updates during which the whole pretrained model is frozen and only the new head trains
    # (fairseq freeze_finetune_updates). The feature encoder stays frozen for the whole run when
    # model.feature_grad_mult is 0 (fairseq feature_grad_mult: 0.0).
    config.finetune.freeze_finetune_updates = freeze_finetune_updates
    # Reference/hypothesis pairs per language kept in each JSON eval report (ctc).
    config.finetune.report_examples = 4

    config.eval.split = "dev"  # WER/CER (ctc) or accuracy (lid) on this split at every eval
    config.eval.num_batches = 1000  # the whole dev split of the usual corpora
    # ctc: also decode with a KenLM word n-gram (xlsr_jax.lm) and report wer_lm / cer_lm ("" = off).
    config.eval.lm = ""
    config.eval.lm_lexicon = ""  # words the search may output ("" = the ARPA file's unigrams)
    config.eval.lm_alpha = 0.5  # LM weight; tune with python -m xlsr_jax.evaluate --tune
    config.eval.lm_beta = 1.0  # score per word
    config.eval.lm_beam_width = 100
    config.init.checkpoint = init_checkpoint  # the pretrained model to fine-tune ("" = from scratch)
    if preset in FSDP_PRESETS:
        config.mesh.fsdp = -1  # shard parameters and Adam moments as in pretraining
        config.mesh.data = 1
    return config


# Encoders too large to replicate per device: fine-tuning shards them like their pretraining.
FSDP_PRESETS = ("xls_r_1b", "xls_r_2b")


def finetune_model(
    preset: str,
    *,
    mask_time_prob: float,
    mask_feature_prob: float,
    mask_feature_length: int = 64,
    layerdrop: float = 0.1,
    **overrides: Any,
) -> dict[str, Any]:
    """A preset with fairseq's fine-tuning regularisation (see module docstring).

    Args:
      preset: `xlsr_jax.models.get_preset` name (must match the pretrained checkpoint).
      mask_time_prob, mask_feature_prob, mask_feature_length, layerdrop: the recipe's values.
      overrides: any other Wav2Vec2Config fields (vocab_size, num_labels, ...).
    """
    from xlsr_jax.models import get_preset

    fields = dict(
        feature_grad_mult=0.0,  # frozen feature encoder
        mask_time_prob=mask_time_prob,
        mask_time_length=10,
        mask_time_min_masks=2,
        mask_feature_prob=mask_feature_prob,
        mask_feature_length=mask_feature_length,
        layerdrop=layerdrop,
        activation_dropout=0.1,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
    )
    fields.update(overrides)
    return get_preset(preset, **fields).to_dict()


# `model.vocab_size` of the CTC recipes: 0 = the size of the vocabulary the input pipeline builds
# from `data` (resolved by the ctc task when the run starts, so building a config reads no file);
# a checkpoint's run config records the resolved size.
VOCAB_FROM_DATA = 0


# The XLS-R paper's ASR fine-tuning recipe as fairseq publishes it "to reproduce the results in our
# paper" (facebookresearch/fairseq examples/wav2vec/xlsr/README.md, "ASR Finetuning", and
# config/finetune.yaml, read 2026-11-30): 300M and 1B use finetune.yaml as is, varying only
# max_update per benchmark and picking lr "from the interval [2e-5, 3e-4] based on dev word error
# rate" (the picked values are not published: finetune.yaml's own lr, 3e-4, is the default here);
# 2B sweeps lr in [3e-6, 3e-5] (not published either: the interval's top, 3e-5, by the same rule)
# with max_tokens 2560000 and an effective batch of 2560000 * 24 samples.
XLSR_ASR_MAX_UPDATE = {"babel": 26000, "common_voice": 13000, "voxpopuli": 50000, "mls_10h": 20000}
XLSR_ASR_MASK_TIME_PROB = 0.75  # finetune.yaml mask_prob (mask_length: fairseq's default 10)
XLSR_ASR_MASK_FEATURE_PROB = 0.25  # finetune.yaml mask_channel_prob, mask_channel_length 64
XLSR_ASR_EVAL_EVERY = 1000  # finetune.yaml validate_interval_updates (best checkpoint by dev WER)


def xlsr_asr_lr(preset: str) -> float:
    """Peak lr of the XLS-R ASR recipe for a preset (see XLSR_ASR_MAX_UPDATE's comment)."""
    return 3e-5 if preset == "xls_r_2b" else 3e-4


def xlsr_asr_batch_seconds(preset: str) -> float:
    """Audio seconds per update of the XLS-R ASR recipe: finetune.yaml's max_tokens 1280000 x
    4 GPUs x update_freq 5 = 25.6M samples (1600 s at 16 kHz); 2B: 2560000 x 24 = 61.44M (3840 s)."""
    return 3840.0 if preset == "xls_r_2b" else 1600.0
