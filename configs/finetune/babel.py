"""CTC fine-tuning on one IARPA BABEL language (the XLSR-53 paper's BABEL setup, as XLS-R repeats it).

Task: the XLSR paper (Conneau et al., 2020, arXiv:2006.13979) fine-tunes the pretrained model
with a CTC character head on the conversational telephone speech of one BABEL language pack at a
time (8 kHz audio, upsampled to 16 kHz for the model) and reports error rates on the pack's dev
set (the LDC packs carry no eval transcripts); XLS-R (Babu et al., 2021, arXiv:2111.09296,
"Speech Recognition", BABEL; section names as the post cited below heads them) repeats it with
WER on five of the languages. Segments are cut from the long recordings by the transcripts' time
marks and non-speech tags removed as Kaldi's BABEL recipe (which ESPnet runs) does:
data_pipelines/babel.py. `eval.split = "dev"` and split "test"
both read the pack's dev/; CER and WER per language are in the eval report.

Published, read from the papers' tables as reproduced (screenshots without captions, so no
table numbers; the paper bodies were not readable here) in Anwarvic/anwarvic.github.io,
my_collections/_speech-recognition/media/:
- XLS-R paper, BABEL table (XLS-R/image10.png), WER, labelled hours as 55, tl 76, sw 30, lo 59,
  ka 46:

      model            as    tl    sw    lo    ka
      XLSR-53         44.1  33.2  26.5   -    31.1   (as the XLS-R paper quotes the XLSR paper)
      XLS-R (0.3B)    42.9  33.2  24.3  31.7  28.0
      XLS-R (1B)      40.4  30.6  21.2  30.1  25.1
      XLS-R (2B)      39.0  29.3  21.0  29.7  24.3

- XLSR paper, 10-language BABEL table (XLSR/image6.png; CER, which the reproducing post states):
  XLSR-53 bn 24.3, zh 25.4, ka 17.2, ht 19.0, ku 35.4, ps 20.7, ta 27.4, tr 18.8, tp 13.7,
  vi 21.8, average 22.4 (XLSR-10 Large average 23.2). Its table of the four languages unseen in
  pretraining (XLSR/image4.png: as, tl, sw, lo) has XLSR-10 rows only (CER as 29.4 base,
  27.7 Large), no XLSR-53 row.
Whether a language model was used for the WERs is not stated in anything that could be read.

Recipe: the XLSR paper's own BABEL fine-tuning hyper-parameters could not be read. Used instead:
fairseq's published XLS-R ASR recipe (`base.XLSR_ASR_*`: fairseq examples/wav2vec/xlsr README
"ASR Finetuning" + config/finetune.yaml), which gives 26000 updates for BABEL; Adam (0.9, 0.98),
tri-stage (0.1, 0.4, 0.5) to 5 %; Transformer frozen for 10000 updates, feature encoder frozen;
mask_prob 0.75 (length 10), mask_channel_prob 0.25 (length 64), LayerDrop 0.1, activation
dropout 0.1; dev WER every 1000 updates; 25.6M samples (1600 s) per update (2B: 61.44M,
3840 s). Not published: the learning rate picked per benchmark (300M/1B: from [2e-5, 3e-4],
default here 3e-4 = finetune.yaml's value; 2B: from [3e-6, 3e-5], default 3e-5) and the
segments per batch: fairseq batches by samples, here by segments, 200 (480 for 2B) assuming
~8 s per conversational segment.

Variants: `lang=as` (ISO code; BABEL_LANGUAGES in data_pipelines/babel.py maps pack numbers);
`path=DIR` the language pack (holding conversational/training, conversational/dev); `preset`
(`large` = XLSR-53 / XLS-R 300M, `xls_r_1b`, `xls_r_2b`; must match the checkpoint), `init`,
`steps`, `batch` (0 = the recipe's), `lr` (0 = the recipe's).
"""

from configs import common
from configs.finetune import base


def get_config(arg=None):
    """Returns the config; `arg` like "lang=sw,path=/data/IARPA_BABEL_OP2_202,init=/ckpt/xlsr_53"."""
    import data_pipelines

    args = common.parse_arg(
        arg,
        lang="as",
        path="/data/babel",
        preset="large",
        init="",
        steps=base.XLSR_ASR_MAX_UPDATE["babel"],
        batch=0,
        lr=0.0,
    )
    lr = args.lr or base.xlsr_asr_lr(args.preset)
    # Segments per update: the recipe's audio seconds at ~8 s per conversational segment.
    batch = args.batch or round(base.xlsr_asr_batch_seconds(args.preset) / 8.0)
    data = data_pipelines.default_config()
    data.sources = [{"type": "babel", "path": args.path, "language": args.lang, "splits": {}}]
    data.languages = [args.lang]
    data.batch_size = batch
    data.min_sample_size = 8000  # 0.5 s: BABEL segments are short turns of a conversation
    data.max_sample_size = 320000  # 20 s; longer segments are dropped and counted
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
        freeze_finetune_updates=min(10000, args.steps // 2),  # finetune.yaml: 10000 of 26000
        init_checkpoint=args.init,
        preset=args.preset,
    )
    config.ckpt.every_steps = 5000
    config.eval.every_steps = base.XLSR_ASR_EVAL_EVERY
    return config
