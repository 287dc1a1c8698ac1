"""Demo: language identification with the tiny model on the shipped espeak-ng corpus (8 languages).

Not a published recipe: the fine-tuning recipe of configs/finetune/base.py with a tiny-model
learning rate, short light masks, 2 s crops and a short freeze; `make demo` starts it from the
CTC stage's encoder (the XLS-R paper's language-ID experiments
fine-tune with the same ingredients: pooled Transformer states, a linear classifier).

Variants: `steps=N`, `batch=N`, `langs=a+b`, `init=DIR`, `lr=X` (as demo_ctc.py).
"""

from configs import common
from configs.finetune import base
from configs.finetune.demo_ctc import demo_data


def get_config(arg=None):
    """Returns the demo language-ID config; `arg` like "steps=200,init=DIR"."""
    args = common.parse_arg(arg, steps=200, batch=8, langs="", init="", lr=3e-3)
    data = demo_data("lid", args.batch, args.langs)
    data.bucket_boundaries = [32000]  # random 2 s crops: one compiled shape
    data.max_sample_size = 32000
    model = base.finetune_model(
        "tiny",
        mask_time_prob=0.1,
        mask_feature_prob=0.05,
        mask_feature_length=8,
        layerdrop=0.0,
        mask_time_length=5,
        num_labels=len(data.languages),
        classifier_proj_size=64,
    )
    config = base.finetune_config(
        task="lid",
        model=model,
        data=data,
        total_steps=args.steps,
        lr=args.lr,
        freeze_finetune_updates=args.steps // 10,
        init_checkpoint=args.init,
    )
    config.optim.phase_ratio = (0.1, 0.6, 0.3)  # as demo_ctc.py
    config.train.log_every = 25
    config.train.peak_flops_per_device = 300e9
    config.ckpt.every_steps = 100
    config.eval.every_steps = 100
    config.eval.num_batches = 100
    return config
