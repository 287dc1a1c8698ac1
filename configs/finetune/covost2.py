"""Speech translation fine-tuning of XLS-R on CoVoST-2 (X -> English or English -> X).

What the XLS-R paper (Babu et al., 2021, §5.1) and its released models fix, and this recipe uses:
  * the pretrained XLS-R encoder with a 3-layer conv adapter (kernel 3, stride 2: frames 8x
    shorter) projecting to 1024 channels, cross-attended by mBART-50's 12-layer decoder
    (initialised from mBART-50, `init.decoder`, e.g. a facebook/mbart-large-50 folder) with its
    250054-token sentencepiece vocabulary (`data.target.tokenizer`: mBART-50's
    sentencepiece.bpe.model) and target-language tokens (one model for many directions);
  * generation from </s> (decoder_start_token_id 2) with the target language forced first;
    beam search of width 5, as the released `generation_config.json`s;
  * the sizes: 300M, 1B, 2B encoders (`size=`), the latter two sharded with FSDP as in pretraining;
  * the decoder's size: 12 layers, width 1024, 16 heads, FFN 4096, 459M parameters (the paper's
    description of its mBART decoder, read in a summary of the paper; MBartDecoderConfig's defaults).
What to expect (the paper's CoVoST-2 test BLEU, read from its tables; multilingual fine-tuning,
one model for the 21 X -> En directions, another for the 15 En -> X ones):
    X -> En average over 21 directions: XLS-R 300M 13.2, 1B 19.3, 2B 22.1 (es -> en, 2B: 39.2);
    En -> X average over 15 directions: 300M 23.2, 1B 26.0, 2B 27.8.
  Without the mBART initialisation the 1B model drops to 12.4 (X -> En) and 25.1 (En -> X); whether
  the paper's BLEU is sacreBLEU on detokenized text is not stated in what could be read.
Not stated in the paper, and taken here from fairseq's recipes (so marked): label smoothing 0.1
(fairseq `examples/speech_to_text` `--label-smoothing 0.1`), the fine-tuning optimiser, tri-stage
schedule and frozen feature encoder of `configs/finetune/base.py` (the wav2vec 2.0 fine-tuning
recipe the paper uses for ASR), the encoder frozen for the first 10000 updates as there, lr 1e-4,
light masking (mask_time_prob 0.1) since the targets are not aligned to frames, 320 clips per
update and 50000 updates (our choices; tune them per direction, as the paper tunes ASR runs).
The paper's learning rate, updates, batch size, schedule, freezing, length penalty and maximum
length could not be found in what was read of it: every such value here is one of the above.

Variants: `src=es` / `tgt=en` one direction (empty src = every pair found under `path`);
`path=DIR` the covost_v2.*.tsv files; `clips=DIR` the Common Voice release (default = path);
`init=DIR` XLS-R pretraining checkpoint (ours or converted); `decoder=DIR` mBART folder;
`tokenizer=FILE` sentencepiece model; `size=300m|1b|2b`; `steps=N`; `batch=N`; `lr=X`.
"""

from configs import common
from configs.finetune import base

# XLS-R encoder size -> preset (configs/xls_r.py's sizes).
PRESETS = {"300m": "large", "1b": "xls_r_1b", "2b": "xls_r_2b"}


def st_sections(config, *, decoder: dict, init_decoder: str, beams: int, max_length: int, label_smoothing: float):
    """Adds the speech-translation sections to a fine-tuning config (`tasks/st.py` reads them)."""
    import ml_collections

    # The decoder's architecture: xlsr_jax.models.MBartDecoderConfig fields (HF MBartConfig names);
    # vocab_size 0 = the target tokenizer's (resolved when the run starts).
    config.decoder = ml_collections.ConfigDict(decoder)
    config.st = ml_collections.ConfigDict()
    config.st.label_smoothing = label_smoothing  # fairseq label_smoothed_cross_entropy epsilon
    config.st.eval_beams = beams  # evaluation search: 1 = greedy, else beam width
    config.st.eval_length_penalty = 1.0  # beam score = log-prob sum / length ** this
    config.st.eval_max_length = max_length  # generated tokens, decoder start included
    # A transformers mBART folder (or translation checkpoint) whose decoder initialises ours,
    # together with init.checkpoint ("" = random decoder).
    config.init.decoder = init_decoder
    return config


def get_config(arg=None):
    """Returns the config; `arg` like "src=es,tgt=en,path=/data/covost,init=/ckpt/xls_r_300m"."""
    import data_pipelines
    from xlsr_jax.models.decoder import MBartDecoderConfig

    args = common.parse_arg(
        arg,
        src="",
        tgt="en",
        path="/data/covost2",
        clips="",
        init="",
        decoder="",
        tokenizer="",
        size="300m",
        steps=50000,
        batch=320,
        lr=1e-4,
    )
    if args.size not in PRESETS:
        raise ValueError(f"size must be one of {sorted(PRESETS)}, got {args.size!r}")
    data = data_pipelines.default_config()
    pairs = [f"{args.src}_{args.tgt}"] if args.src else []
    data.sources = [{"type": "covost", "path": args.path, "clips": args.clips or args.path, "pairs": pairs}]
    data.languages = [args.src] if args.src else []
    data.batch_size = args.batch
    data.min_sample_size = 8000  # clips of 0.5 s and more (Common Voice clips are ~2-10 s)
    data.max_sample_size = 320000  # drop (counted) anything over 20 s
    # mBART-50's tokenizer: an explicit file, else the one in the decoder's folder.
    data.target.tokenizer = args.tokenizer or (f"{args.decoder}/sentencepiece.bpe.model" if args.decoder else "")
    data.target.max_length = 128  # CoVoST-2 translations are single sentences
    data.target.language = args.tgt
    model = base.finetune_model(
        PRESETS[args.size],
        mask_time_prob=0.1,
        mask_feature_prob=0.0,
        add_adapter=True,
        num_adapter_layers=3,
        adapter_kernel_size=3,
        adapter_stride=2,
        output_hidden_size=1024,
    )
    config = base.finetune_config(
        task="st",
        model=model,
        data=data,
        total_steps=args.steps,
        lr=args.lr,
        freeze_finetune_updates=10000,
        init_checkpoint=args.init,
        preset=PRESETS[args.size],
    )
    decoder = {**MBartDecoderConfig().to_dict(), "vocab_size": 0}
    st_sections(config, decoder=decoder, init_decoder=args.decoder, beams=5, max_length=200, label_smoothing=0.1)
    config.ckpt.every_steps = 2000
    config.eval.every_steps = 5000
    config.eval.num_batches = 100
    return config
