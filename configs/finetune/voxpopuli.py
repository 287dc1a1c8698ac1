"""CTC fine-tuning on one VoxPopuli language (the XLS-R paper's VoxPopuli ASR benchmark).

Task: the XLS-R paper (Babu et al., 2021, arXiv:2111.09296, "Speech Recognition", VoxPopuli;
section names as the post cited below heads them) fine-tunes on the transcribed VoxPopuli data
of each of its 14 languages separately (543 h en to 10 h sl) and reports WER per language,
trained and scored here on the `normalized_text` column (lower case, no punctuation;
data_pipelines/voxpopuli.py). Evaluate a run on the test split with
`--config.eval.split=test`; the periodic evaluation uses dev.

Published (read from the paper's VoxPopuli table as reproduced in Anwarvic/anwarvic.github.io,
my_collections/_speech-recognition/media/XLS-R/image13.png; the screenshot carries no caption,
so the table number and the split, dev or test, are not confirmed; the paper body was not
readable here), WER:

    lang     en   de   it   fr   es   pl   ro   hu   nl   cs   sl   fi   hr   sk   Avg
    0.3B   10.2 13.0 19.2 12.6  9.8  9.6  7.9 11.6 14.8 10.5 24.5 14.2 12.3  8.9  12.8
    1B      8.8 11.5 15.1 10.8  8.2  7.7  7.3  9.6 12.5  8.7 19.5 11.3 10.0  7.1  10.6

(no 2B row; baselines of Wang et al. 2021: no pretraining 37.5, VP-10K 15.3 on average). Whether
these WERs use a language model is not stated in anything that could be read here.

Recipe: fairseq's published XLS-R ASR recipe (`base.XLSR_ASR_*`: fairseq examples/wav2vec/xlsr
README "ASR Finetuning" + config/finetune.yaml): 50000 updates for VoxPopuli; Adam (0.9, 0.98),
tri-stage (0.1, 0.4, 0.5) to 5 %; Transformer frozen for 10000 updates, feature encoder frozen;
mask_prob 0.75 (length 10), mask_channel_prob 0.25 (length 64), LayerDrop 0.1, activation
dropout 0.1; dev WER every 1000 updates; 25.6M samples (1600 s) per update (2B: 61.44M,
3840 s). Not published: the learning rate picked per benchmark (300M/1B: from [2e-5, 3e-4],
default here 3e-4 = finetune.yaml's value; 2B: from [3e-6, 3e-5], default 3e-5) and the
segments per batch: fairseq batches by samples, here by segments, 160 (384 for 2B) assuming
~10 s per segment (VoxPopuli segments run to ~20 s; fairseq max_sample_size 320000).

Variants: `lang=de` (VoxPopuli language code, the folder under transcribed_data/); `path=DIR`
the VoxPopuli root (holding transcribed_data/<lang>/asr_<split>.tsv and <year>/ audio);
`text=normalized_text|raw_text`; `preset` (`large` = XLS-R 300M, `xls_r_1b`, `xls_r_2b`; must
match the checkpoint), `init`, `steps`, `batch` (0 = the recipe's), `lr` (0 = the recipe's).
"""

from configs import common
from configs.finetune import base


def get_config(arg=None):
    """Returns the config; `arg` like "lang=hr,path=/data/voxpopuli,init=/ckpt/xls_r_300m"."""
    import data_pipelines

    args = common.parse_arg(
        arg,
        lang="de",
        path="/data/voxpopuli",
        text="normalized_text",
        preset="large",
        init="",
        steps=base.XLSR_ASR_MAX_UPDATE["voxpopuli"],
        batch=0,
        lr=0.0,
    )
    lr = args.lr or base.xlsr_asr_lr(args.preset)
    # Segments per update: the recipe's audio seconds at ~10 s per VoxPopuli segment.
    batch = args.batch or round(base.xlsr_asr_batch_seconds(args.preset) / 10.0)
    data = data_pipelines.default_config()
    data.sources = [
        {"type": "voxpopuli", "path": args.path, "languages": [args.lang], "text_column": args.text, "splits": {}}
    ]
    data.languages = [args.lang]
    data.batch_size = batch
    data.min_sample_size = 8000  # keep segments of 0.5 s and more
    data.max_sample_size = 320000  # drop (counted) anything over 20 s
    # The CTC task sets vocab_size from the train transcripts (no corpus read here).
    model = base.finetune_model(
        args.preset,
        mask_time_prob=base.XLSR_ASR_MASK_TIME_PROB,
        mask_feature_prob=base.XLSR_ASR_MASK_FEATURE_PROB,
        vocab_size=base.VOCAB_FROM_DATA,
    )
    config = base.finetune_config(
        task="ctc",
        model=model,
        data=data,
        total_steps=args.steps,
        lr=lr,
        freeze_finetune_updates=min(10000, args.steps // 4),
        init_checkpoint=args.init,
        preset=args.preset,
    )
    config.ckpt.every_steps = 5000
    config.eval.every_steps = base.XLSR_ASR_EVAL_EVERY
    return config
