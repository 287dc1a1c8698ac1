"""XLS-R pretraining (Babu et al. 2021), one recipe with a size variant: 300M, 1B or 2B parameters.

The three sizes share the recipe and differ in three things: the architecture preset, the peak
learning rate, and (1B / 2B) sharding with rematerialisation.

| `size=` | parameters | architecture (layers / width / feed-forward) | peak lr | sharding |
|---|---|---|---|---|
| `300m` (default) | 317M | 24 / 1024 / 4096 (the wav2vec 2.0 LARGE preset `large`) | 5e-3 | data parallel |
| `1b` | 965M | 48 / 1280 / 5120 (preset `xls_r_1b`) | 3e-4 | FSDP over all devices, remat per block |
| `2b` | 2162M | 48 / 1920 / 7680 (preset `xls_r_2b`) | 3e-4 | FSDP over all devices, remat per block |

Sources: Babu et al. 2021, "XLS-R: Self-supervised Cross-lingual Speech Representation Learning
at Scale" (arXiv:2111.09296), Table 1: the architectures and the peak learning rates (5e-3 for
the 0.3B model, the same value as fairseq wav2vec2_large_librivox.yaml `lr: [0.005]`; 3e-4 for
the 1B and 2B models); 436k hours in 128 languages, sampled with alpha = 0.5 (data section).
The released checkpoints were trained for 1M updates (fairseq's file names `xlsr2_*_1000k.pt`).
Everything else is the fairseq LARGE recipe (wav2vec2_large_librivox.yaml): Adam betas
(0.9, 0.98), eps 1e-6, weight decay 0.01, 32k warmup then linear decay, Gumbel temperature
(2, 0.1, 0.999995). fairseq trained the 1B and 2B models with fully sharded data parallelism;
here their parameters and optimizer state are FSDP-sharded over all devices (mesh.fsdp = -1)
and each Transformer block is rematerialised.
(Table 1 could not be re-read offline when this file was written: verify the learning rates
against it before a full-scale run.)

Variants (`configs/xls_r.py:size=1b,runlocal`): `size=300m|1b|2b`; `runlocal` (20-step smoke run).
"""

from configs import common

# size -> (model preset, preset overrides, peak learning rate, FSDP over all devices); see the table above.
SIZES = {
    "300m": ("large", {}, 5e-3, False),
    # nn.scan keeps compile time flat in depth; remat trades compute for activation memory.
    "1b": ("xls_r_1b", {"scan_layers": True, "remat": "full"}, 3e-4, True),
    "2b": ("xls_r_2b", {"scan_layers": True, "remat": "full"}, 3e-4, True),
}


def get_config(arg=None):
    """Returns the XLS-R pretraining config; `arg` like "size=1b,runlocal" (see module doc).

    Raises:
      ValueError: an unknown size or variant.
    """
    import data_pipelines
    from xlsr_jax.models import get_preset

    args = common.parse_arg(arg, size="300m", runlocal=False)
    if args.size not in SIZES:
        raise ValueError(f"unknown XLS-R size {args.size!r}; known: {sorted(SIZES)}")
    preset, overrides, lr, fsdp = SIZES[args.size]
    config = common.pretraining_config(
        model=get_preset(preset, **overrides).to_dict(),
        data=data_pipelines.default_config(),
        total_steps=1_000_000,
        lr=lr,
        warmup_steps=32_000,
        gumbel_temperature=(2.0, 0.1, 0.999995),
    )
    if fsdp:
        config.mesh.data = 1  # every device holds a slice of the parameters ...
        config.mesh.fsdp = -1  # ... and of the batch: ZeRO-3 style
    return common.runlocal(config) if args.runlocal else config
