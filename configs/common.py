"""Shared builders of the run configs: every section and field, with its meaning.

`base_config` holds what every task has; each pretraining recipe (`pretrain_base.py`,
`xlsr_53.py`, `xls_r.py`, ...) calls `pretraining_config` (which adds to it) with the numbers of
its published source and states that source; `configs/finetune/base.py` adds the fine-tuning
fields to the same base. Fields whose value comes from a
paper or fairseq config are set there; the defaults here are the fairseq wav2vec 2.0 defaults.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from xlsr_jax.constants import SAMPLE_RATE


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses big_vision-style `get_config` arguments: "runlocal,steps=100" -> ConfigDict.

    A bare word sets a boolean flag; `key=value` values are parsed as int, float or string.
    Unknown keys are an error so a typo in a variant name does not pass silently.
    """
    parsed = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
        if not _:
            parsed[key] = True
            continue
        for cast in (int, float):
            try:
                parsed[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            parsed[key] = value
    return ml_collections.ConfigDict(parsed)


def base_config(
    *, task: str, model: dict[str, Any], data: ml_collections.ConfigDict, total_steps: int, lr: float
) -> ml_collections.ConfigDict:
    """The sections and fields every task has; `pretraining_config` and the fine-tuning base add theirs.

    Args:
      task: `xlsr_jax.tasks.TASKS` key ("pretrain", "ctc", "lid").
      model: `Wav2Vec2Config.to_dict()` of the architecture (with any overrides applied).
      data: the input pipeline config (`data_pipelines.default_config()` or a variant).
      total_steps: optimizer updates (fairseq `max_update`); the schedule ends there.
      lr: peak learning rate.
    Returns:
      ConfigDict with sections task, model, data, train, optim, mesh, sharding, ckpt, eval, init.
    """
    config = ml_collections.ConfigDict()
    config.task = task  # what is trained: a key of xlsr_jax.tasks.TASKS

    # Architecture: the fields of xlsr_jax.models.Wav2Vec2Config (HF Wav2Vec2Config names).
    config.model = ml_collections.ConfigDict(model)

    # Input pipeline: see data_pipelines.default_config() for its fields.
    config.data = data

    # One reference so `--config.train.total_steps=N` also moves the end of the lr schedule.
    steps = ml_collections.FieldReference(total_steps)

    config.train = ml_collections.ConfigDict()
    config.train.total_steps = steps  # batches to train on (= updates when none is skipped)
    config.train.seed = 0  # parameter init and the per-step dropout/mask/Gumbel keys
    # JAX's persistent compilation cache, so a restarted run skips recompiling: "" = <workdir>/
    # jax_cache, "none" = off, or a folder (e.g. ~/.cache/xlsr_jax/jax, shared by runs).
    config.train.compilation_cache_dir = ""
    # Microbatches per update (fairseq update_freq): the data section's batch is cut into this
    # many pieces whose gradients are averaged, for published batch sizes on fewer devices.
    config.train.grad_accum_steps = 1
    config.train.log_every = 200  # steps between metric writes (fairseq log_interval 200)
    config.train.progress_bar = True  # tqdm bar with rate and ETA on process 0
    # Non-finite steps in a row that stop the run (checked at log and checkpoint steps; the skipped
    # updates leave the parameters untouched meanwhile). 0 = never stop.
    config.train.max_consecutive_bad_steps = 100
    config.train.peak_flops_per_device = 0.0  # FLOP/s for perf/mfu; 0 = look up the device kind
    config.train.init_num_samples = SAMPLE_RATE  # audio length (1 s) used only to build the parameters
    # jax.transfer_guard level around each step's dispatch: "allow", "log" or "disallow" (a
    # debugging aid: "disallow" turns an implicit host<->device copy into an error).
    config.train.transfer_guard = "allow"

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adamw"  # fairseq `adam` (decoupled weight decay on all parameters)
    config.optim.lr = lr  # peak learning rate
    config.optim.b1 = 0.9  # fairseq adam_betas (0.9, 0.98)
    config.optim.b2 = 0.98
    config.optim.eps = 1e-6  # fairseq adam_eps
    config.optim.weight_decay = 0.01  # decoupled weight decay (fairseq adam `weight_decay`)
    config.optim.clip_grad_norm = 0.0  # global gradient-norm clip; 0 = none (fairseq clip_norm default)
    config.optim.schedule = "constant"  # "polynomial_decay" | "tri_stage" | "constant"
    config.optim.total_steps = steps  # the schedule ends here (tied to train.total_steps)

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1  # pure data parallelism over the rest of the devices
    config.mesh.fsdp = 1  # parameter/optimizer sharding width (set > 1 for 1B / 2B)
    config.mesh.tensor = 1  # tensor parallelism over heads / feed-forward width

    config.sharding = ml_collections.ConfigDict()
    # Overrides of sharding.logical_axis_rules(): a tuple of (logical name, mesh axis or None).
    config.sharding.logical_axis_rules = ()

    config.ckpt = ml_collections.ConfigDict()
    config.ckpt.every_steps = 25000  # fairseq save_interval_updates
    config.ckpt.keep = 2  # most recent checkpoints kept
    config.ckpt.async_save = True  # write in the background while training continues

    config.eval = ml_collections.ConfigDict()
    config.eval.every_steps = 10000  # steps between dev-loss evaluations; 0 = never
    config.eval.num_batches = 50  # dev batches per evaluation (per process)
    config.eval.split = "dev"  # split passed to data_pipelines.build_input

    config.init = ml_collections.ConfigDict()
    config.init.checkpoint = ""  # params-only initialisation from this checkpoint ("" = random)
    # Accept an init.checkpoint whose parameters only partly fit the model: restore those with
    # the model's shapes, initialise the others freshly (both listed in the log). False: a
    # mismatch is an error listing every differing parameter.
    config.init.partial = False
    return config


def pretraining_config(
    *,
    model: dict[str, Any],
    data: ml_collections.ConfigDict,
    total_steps: int,
    lr: float,
    warmup_steps: int,
    gumbel_temperature: tuple[float, float, float],
    clip_grad_norm: float = 0.0,
    weight_decay: float = 0.01,
) -> ml_collections.ConfigDict:
    """A complete pretraining config: `base_config` plus the Gumbel temperature, the codebook
    check and the polynomial-decay schedule; recipes override what their source specifies.

    Args:
      model: `Wav2Vec2Config.to_dict()` of the architecture (with any overrides applied).
      data: the input pipeline config (`data_pipelines.default_config()` or a variant).
      total_steps: optimizer updates (fairseq `max_update`); the lr decays to 0 there.
      lr: peak learning rate.
      warmup_steps: linear warmup updates (fairseq `warmup_updates`).
      gumbel_temperature: (max, min, decay) of the Gumbel temperature (fairseq `latent_temp`).
      clip_grad_norm: global gradient-norm clip; 0 disables (fairseq `clip_norm`, default 0).
      weight_decay: decoupled weight decay (fairseq adam `weight_decay`).
    Returns:
      ConfigDict with sections task, model, data, train, optim, mesh, sharding, ckpt, eval, init.
    """
    config = base_config(task="pretrain", model=model, data=data, total_steps=total_steps, lr=lr)
    config.train.gumbel_max_temperature = gumbel_temperature[0]  # start temperature
    config.train.gumbel_min_temperature = gumbel_temperature[1]  # floor
    config.train.gumbel_temperature_decay = gumbel_temperature[2]  # per-update decay factor
    config.train.codebook_collapse_fraction = 0.1  # warn when code perplexity < this * G*V

    config.optim.weight_decay = weight_decay
    config.optim.clip_grad_norm = clip_grad_norm  # 0 = no clipping
    config.optim.schedule = "polynomial_decay"
    config.optim.warmup_steps = warmup_steps  # linear warmup from 0
    config.optim.end_lr = 0.0  # fairseq polynomial_decay end_learning_rate
    config.optim.power = 1.0  # 1.0 = linear decay (fairseq default)
    return config


def runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a recipe to a few-minute smoke run on one machine (big_vision's `runlocal`)."""
    config.train.total_steps = 20
    config.optim.warmup_steps = 5
    config.train.log_every = 5
    config.ckpt.every_steps = 10
    config.eval.every_steps = 10
    config.eval.num_batches = 2
    return config
