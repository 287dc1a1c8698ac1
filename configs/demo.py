"""Demo: pretrain the tiny model on the shipped 8-language espeak-ng corpus, minutes on a CPU.

Not a published recipe: the optimiser follows the fairseq LARGE recipe (Adam betas (0.9, 0.98),
eps 1e-6, weight decay 0.01, warmup then linear decay) at a tiny-model learning rate, and the
Gumbel temperature decays from 2 to its floor of 0.5 within the run instead of over 1M updates.
The model is the `tiny` preset (XLS-R structure: layer-norm extractor, pre-LN Transformer).

Variants (`configs/demo.py:steps=300`): `steps=N` total updates; `batch=N` global batch size.
"""

from configs import common


def get_config(arg=None):
    """Returns the demo config; `arg` like "steps=300,batch=8"."""
    import data_pipelines
    from xlsr_jax.models import get_preset

    args = common.parse_arg(arg, steps=150, batch=8)
    data = data_pipelines.demo_corpus_config("pretrain", batch_size=args.batch)
    # One length bucket (3 s crops, shorter clips padded): each bucket is one compilation, which
    # costs more than the padding on a 2-core CPU.
    data.bucket_boundaries = [48000]
    config = common.pretraining_config(
        model=get_preset("tiny").to_dict(),
        data=data,
        total_steps=args.steps,
        lr=1e-3,
        warmup_steps=max(1, args.steps // 10),
        gumbel_temperature=(2.0, 0.5, 0.99),
        clip_grad_norm=10.0,
    )
    config.train.log_every = 10
    config.train.peak_flops_per_device = 300e9  # measured float32 matmul rate of the 2-core dev box
    config.ckpt.every_steps = 50
    config.eval.every_steps = 50
    config.eval.num_batches = 4
    return config
