"""wav2vec 2.0 BASE pretraining (the XLSR "base" architecture): 95M parameters.

Source: fairseq examples/wav2vec/config/pretraining/wav2vec2_base_librispeech.yaml
(Baevski et al. 2020): Adam betas (0.9, 0.98), eps 1e-6, weight decay 0.01, peak lr 5e-4,
32k warmup updates then linear (polynomial power 1) decay to 0 at 400k updates, no gradient
clipping (fairseq clip_norm default 0), Gumbel temperature (2, 0.5, 0.999995) (fairseq default
latent_temp), loss weights (diversity 0.1, feature penalty 10), feature_grad_mult 0.1, layerdrop
0.05 (the last three live in the `base` model preset). fairseq trained on 64 GPUs x 1.4M
samples (max_tokens) per GPU; set the batch in the data section.

Variants (`configs/pretrain_base.py:runlocal`): `runlocal` shrinks it to a 20-step smoke run.
"""

from configs import common


def get_config(arg=None):
    """Returns the BASE pretraining config; `arg` is a comma list of variants (see module doc)."""
    import data_pipelines
    from xlsr_jax.models import get_preset

    args = common.parse_arg(arg, runlocal=False)
    config = common.pretraining_config(
        model=get_preset("base").to_dict(),
        data=data_pipelines.default_config(),
        total_steps=400_000,
        lr=5e-4,
        warmup_steps=32_000,
        gumbel_temperature=(2.0, 0.5, 0.999995),
    )
    return common.runlocal(config) if args.runlocal else config
