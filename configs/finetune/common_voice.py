"""CTC fine-tuning of XLS-R on one Common Voice language (the XLS-R paper's Common Voice setup).

Numbers: fairseq `examples/wav2vec/config/finetuning/vox_10h.yaml` (the LARGE-model recipe for
~10 h of labelled speech, a typical Common Voice language): lr 1e-4, 20000 updates, tri-stage
(0.1, 0.4, 0.5) to 5% of peak, Transformer frozen for 10000 updates, feature encoder frozen,
mask_prob 0.75 (length 10), mask_channel_prob 0.25 (length 64), LayerDrop 0.1, activation
dropout 0.1; XLS-R (Babu et al., 2021, §4-5) fine-tunes every Common Voice language this way,
tuning lr and masking. Batch: vox_10h's 1.28M samples x 4 GPUs x update_freq 5 = 25.6M samples
(~1600 s) per update, about 320 Common Voice clips.

Variants: `lang=sw` Common Voice locale; `path=DIR` corpus root (holding `<lang>/train.tsv`,
clips/, ...); `preset=large` architecture (XLS-R 300M; xls_r_1b, xls_r_2b) (must match the checkpoint); `init=DIR`
pretrained checkpoint; `steps=N`; `batch=N`; `lr=X`.
"""

from configs import common
from configs.finetune import base


def get_config(arg=None):
    """Returns the config; `arg` like "lang=sw,path=/data/cv-corpus-15.0,init=/ckpt/xls_r_300m"."""
    import data_pipelines

    args = common.parse_arg(
        arg, lang="sw", path="/data/common_voice", preset="large", init="", steps=20000, batch=320, lr=1e-4
    )
    data = data_pipelines.default_config()
    data.sources = [{"type": "common_voice", "path": args.path, "splits": {}, "languages": [args.lang], "language": ""}]
    data.languages = [args.lang]
    data.batch_size = args.batch
    data.min_sample_size = 8000  # keep clips of 0.5 s and more (Common Voice clips are ~2-10 s)
    data.max_sample_size = 320000  # drop (counted) anything over 20 s
    model = base.finetune_model(
        args.preset, mask_time_prob=0.75, mask_feature_prob=0.25, vocab_size=base.VOCAB_FROM_DATA
    )
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
    config.ckpt.every_steps = 2000
    config.eval.every_steps = 2000
    return config
