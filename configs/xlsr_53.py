"""XLSR-53 pretraining: the LARGE wav2vec 2.0 model on 53 languages (317M parameters).

Sources: Conneau et al. 2020, "Unsupervised Cross-lingual Representation Learning for Speech
Recognition" (arXiv:2006.13979), and fairseq examples/wav2vec/config/pretraining/
wav2vec2_large_librivox.yaml for the LARGE recipe it builds on: Adam betas (0.9, 0.98),
eps 1e-6, weight decay 0.01, 32k warmup updates then linear decay, Gumbel temperature
(2, 0.1, 0.999995), diversity weight 0.1 and no feature penalty, feature_grad_mult 1.0,
pre-LN Transformer with a layer-norm conv extractor (the `large` model preset). The paper
samples languages with alpha = 0.5 (data section) and reports a peak learning rate of 1e-3 for
the multilingual LARGE models; the number of updates is set to the LARGE recipe's 1M here.
An author's answer in fairseq issue #2997 confirms the shape of this: XLSR-53 was pretrained
"similar to the pretraining of the Librivox model (same setting, with lower learning rate)",
with low-resource languages upsampled in the manifest.
(The paper could not be re-read offline when this file was written: check the peak lr and the
update count against its section 4 before a full-scale run.)

Variants: `runlocal` (20-step smoke run).
"""

from configs import common


def get_config(arg=None):
    """Returns the XLSR-53 pretraining config; `arg` is a comma list of variants."""
    import data_pipelines
    from xlsr_jax.models import get_preset

    args = common.parse_arg(arg, runlocal=False)
    config = common.pretraining_config(
        model=get_preset("large").to_dict(),
        data=data_pipelines.default_config(),
        total_steps=1_000_000,
        lr=1e-3,
        warmup_steps=32_000,
        gumbel_temperature=(2.0, 0.1, 0.999995),
    )
    config.ckpt.every_steps = 25_000  # fairseq save_interval_updates
    return common.runlocal(config) if args.runlocal else config
