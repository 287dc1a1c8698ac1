"""Demo: language identification with the tiny model on the shipped espeak-ng corpus (8 languages).

Not a published recipe: the fine-tuning recipe of configs/finetune/base.py with a tiny-model
learning rate, short masks and a short freeze (the XLS-R paper's language-ID experiments
fine-tune with the same ingredients: pooled Transformer states, a linear classifier).

Variants: `steps=N`, `batch=N`, `langs=a+b`, `init=DIR`, `lr=X` (as demo_ctc.py).
"""

from configs import common
from configs.finetune import base
from configs.finetune.demo_ctc import demo_data


def get_config(arg=None):
    """Returns the demo language-ID config; `arg` like "steps=200,init=DIR"."""
    args = common.parse_arg(arg, steps=200, batch=8, langs="", init="", lr=2e-3)
    data = demo_data("lid", args.batch, args.langs)
    model = base.finetune_model(
        "tiny",
        mask_time_prob=0.2,
        mask_feature_prob=0.1,
        mask_feature_length=8,
        layerdrop=0.05,
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
    config.train.log_every = 25
    config.train.peak_flops_per_device = 300e9
    config.ckpt.every_steps = 100
    config.eval.every_steps = 100
    config.eval.num_batches = 100
    return config
