"""Demo: CTC fine-tuning of the tiny model on the shipped espeak-ng corpus, minutes on a CPU.

Not a published recipe: the fairseq fine-tuning recipe (configs/finetune/base.py) scaled to a
tiny model and a few hundred updates. Masks are shorter and rarer than the recipe's (the tiny
model is 64 channels wide, so fairseq's 64-channel masks would blank all of it), the peak
learning rate is a tiny-model one, and the Transformer is frozen for the first 10% of updates
instead of 10000.

Variants (`configs/finetune/demo_ctc.py:steps=400,langs=es+sw`): `steps=N` updates; `batch=N`
global batch; `langs=a+b` languages of the shipped corpus (default es+sw+tr: Latin scripts with
near-phonemic spelling, learnable in minutes; `langs=ar+es+hi+ky+ru+sw+tr+zh-CN` for all 8 and a
272-character vocabulary); `init=DIR` pretrained
checkpoint (also `--config.init.checkpoint=DIR`); `lr=X` peak learning rate.
"""

from configs import common
from configs.finetune import base


def demo_data(task: str, batch: int, langs: str):
    """The shipped corpus, `langs` ("a+b", "" = all) in a fixed order, two length buckets."""
    import data_pipelines

    data = data_pipelines.demo_corpus_config(task, batch_size=batch)
    data.languages = [code for code in langs.split("+") if code] or list(data_pipelines.DEMO_LANGUAGES)
    data.sources[0]["languages"] = list(data.languages)
    # Clips are 1-4.2 s: two buckets halve the padding of one 4.2 s bucket; each is a compilation.
    data.bucket_boundaries = [40000, 67200]
    data.max_sample_size = 67200  # the longest clip is 4.2 s
    data.sampling_alpha = 1.0  # the languages are the same size anyway
    return data


def get_config(arg=None):
    """Returns the demo CTC fine-tuning config; `arg` like "steps=400,langs=es+sw"."""
    args = common.parse_arg(arg, steps=400, batch=8, langs="es+sw+tr", init="", lr=5e-3)
    data = demo_data("ctc", args.batch, args.langs)
    # Light regularisation: in a few hundred updates the model must first leave CTC's all-blank
    # plateau, which masking and LayerDrop slow down.
    model = base.finetune_model(
        "tiny",
        mask_time_prob=0.1,
        mask_feature_prob=0.05,
        mask_feature_length=8,
        layerdrop=0.0,
        mask_time_length=5,
        vocab_size=base.VOCAB_FROM_DATA,
    )
    config = base.finetune_config(
        task="ctc",
        model=model,
        data=data,
        total_steps=args.steps,
        lr=args.lr,
        freeze_finetune_updates=args.steps // 10,
        init_checkpoint=args.init,
    )
    config.optim.phase_ratio = (0.1, 0.6, 0.3)  # a longer hold at the peak than the recipe's 0.4
    config.train.log_every = 25
    config.train.peak_flops_per_device = 300e9  # measured float32 matmul rate of the 2-core dev box
    config.ckpt.every_steps = 100
    config.eval.every_steps = 100
    config.eval.num_batches = 100  # the whole dev split (10 clips per language)
    return config
