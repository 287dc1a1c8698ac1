"""CTC fine-tuning on one IARPA BABEL language (the XLSR-53 paper's BABEL setup).

Task: the XLSR paper (Conneau et al., 2020, arXiv:2006.13979, BABEL setup and results)
fine-tunes the pretrained model with a CTC character head on the conversational telephone speech
of one BABEL language pack at a time (8 kHz audio, upsampled to 16 kHz for the model) and reports
error rates on the pack's dev set (the LDC packs carry no eval transcripts); XLS-R (Babu et al.,
2021, speech recognition results) repeats it on the same languages. Segments are cut from the
long recordings by the transcripts' time marks and non-speech tags removed as Kaldi's BABEL
recipe (which ESPnet runs) does: data_pipelines/babel.py. `eval.split = "dev"` and split "test"
both read the pack's dev/; CER and WER per language are in the eval report. Published (the
paper's best model, as paperswithcode lists it): WER as 44.1, tl 33.2, sw 26.5, ka 31.1;
CER as 29.4.

Numbers: a BABEL full language pack has ~40-80 h of transcribed conversation, so the recipe is
fairseq `examples/wav2vec/config/finetuning/vox_100h.yaml` (LARGE model): lr 3e-5, 80000
updates, tri-stage (0.1, 0.4, 0.5) to 5%, Transformer frozen for 10000 updates, feature encoder
frozen, mask_prob 0.5 (length 10), mask_channel_prob 0.5 (length 64), LayerDrop 0.1, activation
dropout 0.1; batch 25.6M samples (1600 s) per update. The XLSR paper tunes lr and masking per
language; its chosen values could not be checked offline (see the notes).

Variants: `lang=as` (ISO code; BABEL_LANGUAGES in data_pipelines/babel.py maps pack numbers);
`path=DIR` the language pack (holding conversational/training, conversational/dev); `preset`,
`init`, `steps`, `batch`, `lr`.
"""

from configs import common
from configs.finetune import base


def get_config(arg=None):
    """Returns the config; `arg` like "lang=sw,path=/data/IARPA_BABEL_OP2_202,init=/ckpt/xlsr_53"."""
    import data_pipelines

    args = common.parse_arg(
        arg, lang="as", path="/data/babel", preset="large", init="", steps=80000, batch=200, lr=3e-5
    )
    data = data_pipelines.default_config()
    data.sources = [{"type": "babel", "path": args.path, "language": args.lang, "splits": {}}]
    data.languages = [args.lang]
    data.batch_size = args.batch
    data.min_sample_size = 8000  # 0.5 s: BABEL segments are short turns of a conversation
    data.max_sample_size = 320000  # 20 s; longer segments are dropped and counted
    # The CTC task sets vocab_size from the train transcripts (no corpus read here).
    model = base.finetune_model(args.preset, mask_time_prob=0.5, mask_feature_prob=0.5, vocab_size=base.VOCAB_FROM_DATA)
    config = base.finetune_config(
        task="ctc",
        model=model,
        data=data,
        total_steps=args.steps,
        lr=args.lr,
        freeze_finetune_updates=min(10000, args.steps // 4),
        init_checkpoint=args.init,
    )
    config.ckpt.every_steps = 5000
    config.eval.every_steps = 5000
    if args.preset in ("xls_r_1b", "xls_r_2b"):
        config.mesh.fsdp = -1
        config.mesh.data = 1
    return config
