"""XLS-R 300M pretraining: LARGE architecture on 436k hours in 128 languages (317M parameters).

Sources: Babu et al. 2021, "XLS-R: Self-supervised Cross-lingual Speech Representation Learning
at Scale" (arXiv:2111.09296), Table 1 (architecture; peak learning rate 5e-3 for the 0.3B
model, the same value as fairseq wav2vec2_large_librivox.yaml `lr: [0.005]`), and the fairseq
LARGE recipe for the rest: Adam betas (0.9, 0.98), eps 1e-6, weight decay 0.01, 32k warmup
then linear decay, Gumbel temperature (2, 0.1, 0.999995). The released checkpoints were trained
for 1M updates (fairseq's file names `xlsr2_*_1000k.pt`). Languages are sampled with alpha = 0.5
(data section).
(Table 1 could not be re-read offline when this file was written: verify the learning rate
against it before a full-scale run.)

Variants: `runlocal` (20-step smoke run).
"""

from configs import common


def get_config(arg=None):
    """Returns the XLS-R 300M pretraining config; `arg` is a comma list of variants."""
    import data_pipelines
    from xlsr_jax.models import get_preset

    args = common.parse_arg(arg, runlocal=False)
    config = common.pretraining_config(
        model=get_preset("large").to_dict(),
        data=data_pipelines.default_config(),
        total_steps=1_000_000,
        lr=5e-3,
        warmup_steps=32_000,
        gumbel_temperature=(2.0, 0.1, 0.999995),
    )
    return common.runlocal(config) if args.runlocal else config
