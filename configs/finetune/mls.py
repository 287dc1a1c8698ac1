"""CTC fine-tuning of XLS-R on one Multilingual LibriSpeech language (XLS-R's MLS setup).

Numbers: fairseq `examples/wav2vec/config/finetuning/vox_100h.yaml` (LARGE model, ~100 h of
labelled speech, the order of an MLS language's smaller train sets): lr 3e-5, 80000 updates,
tri-stage (0.1, 0.4, 0.5) to 5%, Transformer frozen for 10000 updates, feature encoder frozen,
mask_prob 0.5 (length 10), mask_channel_prob 0.5 (length 64), LayerDrop 0.1, activation dropout
0.1. Batch as vox_100h: 1.28M samples x 4 GPUs x update_freq 5 = 25.6M samples per update
(MLS segments are 10-20 s: ~100 per batch).

Variants: `lang=german` (MLS folder suffix, also the language code); `path=DIR` the
`mls_<lang>` root (train/ dev/ test/ with transcripts.txt, segments.txt, audio/); `preset`,
`init`, `steps`, `batch`, `lr`.
"""

from configs import common
from configs.finetune import base


def get_config(arg=None):
    """Returns the config; `arg` like "lang=polish,path=/data/mls_polish,init=/ckpt/xls_r_300m"."""
    import data_pipelines

    args = common.parse_arg(arg, lang="german", path="", preset="large", init="", steps=80000, batch=96, lr=3e-5)
    path = args.path or f"/data/mls_{args.lang}"
    data = data_pipelines.default_config()
    data.sources = [{"type": "mls", "path": path, "splits": {}, "languages": [], "language": args.lang}]
    data.languages = [args.lang]
    data.batch_size = args.batch
    data.max_sample_size = 320000  # MLS segments are at most 20 s
    model = base.finetune_model(args.preset, mask_time_prob=0.5, mask_feature_prob=0.5, vocab_size=base.VOCAB_FROM_DATA)
    config = base.finetune_config(
        task="ctc",
        model=model,
        data=data,
        total_steps=args.steps,
        lr=args.lr,
        freeze_finetune_updates=10000,
        init_checkpoint=args.init,
        preset=args.preset,
    )
    config.ckpt.every_steps = 5000
    config.eval.every_steps = 5000
    return config
