"""XLS-R 1B pretraining (965M parameters: 48 layers, width 1280, feed-forward 5120).

Sources: Babu et al. 2021, "XLS-R: Self-supervised Cross-lingual Speech Representation Learning
at Scale" (arXiv:2111.09296), Table 1 (architecture; peak learning rate 3e-4 for the 1B and 2B
models), 1M updates (fairseq release `xlsr2_*_1000k.pt`), and the fairseq LARGE recipe
(wav2vec2_large_librivox.yaml) for the optimiser: Adam betas (0.9, 0.98), eps 1e-6, weight
decay 0.01, 32k warmup then linear decay, Gumbel temperature (2, 0.1, 0.999995). fairseq trained
these with fully sharded data parallelism; here parameters and optimizer state are FSDP-sharded
over all devices (mesh.fsdp = -1) and each Transformer block is rematerialised.
(Table 1 could not be re-read offline when this file was written: verify the learning rate
against it before a full-scale run.)

Variants: `runlocal` (20-step smoke run).
"""

from configs import common


def get_config(arg=None):
    """Returns the XLS-R 1B pretraining config; `arg` is a comma list of variants."""
    import data_pipelines
    from xlsr_jax.models import get_preset

    args = common.parse_arg(arg, runlocal=False)
    config = common.pretraining_config(
        # nn.scan keeps compile time flat in depth; remat trades compute for activation memory.
        model=get_preset("xls_r_1b", scan_layers=True, remat="full").to_dict(),
        data=data_pipelines.default_config(),
        total_steps=1_000_000,
        lr=3e-4,
        warmup_steps=32_000,
        gumbel_temperature=(2.0, 0.1, 0.999995),
    )
    config.mesh.data = 1  # every device holds a slice of the parameters ...
    config.mesh.fsdp = -1  # ... and of the batch: ZeRO-3 style
    return common.runlocal(config) if args.runlocal else config
