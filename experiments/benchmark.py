"""Speed of the pretraining step and of encoder inference, JAX vs PyTorch `transformers`.

For each chosen config this times, in one process and with repeats interleaved so that machine
noise hits both sides alike:
  - `train`: one pretraining update (forward, `losses.pretraining_loss`, backward, AdamW), jitted
    with the state donated, masks and distractors drawn inside the step;
  - `infer`: the encoder forward (`Wav2Vec2Model`, deterministic, no masking);
  - `translate` (opt-in): speech translation, encoder + adapter then greedy generation of a fixed
    number of tokens in one jitted while loop (`xlsr_jax.generation`), the decoder reading its
    KV cache: tokens/s, seconds per token from two lengths' difference, and one cached decoder
    step timed near the start and near the end of the cache (equal when the cost per token does
    not grow with the position);
and, when `torch` and `transformers` are installed, the same two for `transformers`'
`Wav2Vec2ForPreTraining` random-initialised from the same config, on the same batch, with masks of
the same density and the same number of distractors (drawn on the host by transformers' own
helpers, outside the timed region, as its pretraining script's collator does).

Reported per config and step (JSON on stdout): median / min seconds, audio-seconds per second,
compile seconds (wall and CPU), XLA's FLOPs (`flops`: what the compiled step does; `model_flops`:
the unscanned, un-rematerialised model's count, which MFU uses, since XLA counts a scanned
loop's body once), MFU (model FLOPs / median time / --peak_flops), peak memory of the compiled
step (XLA's buffer assignment: arguments + outputs + temporaries - aliased), and the ratio
PyTorch time / JAX time (> 1 means JAX is faster).

  .venv/bin/python experiments/benchmark.py --configs tiny,small,base --repeats 5
  .venv/bin/python experiments/benchmark.py --configs large --repeats 2 --no_torch

The `large` config takes minutes per repeat on a 2-core CPU; `--configs` picks what fits.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a clone

from xlsr_jax.constants import SAMPLE_RATE  # noqa: E402

CPU_PEAK_FLOPS = 300e9  # a 2048^3 f32 matmul on the 2-core development box when the issue was written
CONFIG_NAMES = ("tiny", "small", "base", "large", "xls_r_1b", "xls_r_2b")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="tiny,small,base", help=f"comma-separated, from {CONFIG_NAMES}")
    p.add_argument("--steps", default="train,infer", help="comma-separated: train, infer, translate")
    p.add_argument(
        "--translate_lengths",
        default="16,64",
        help="translate: two generation lengths (tokens); per-token cost from their difference",
    )
    p.add_argument("--batch", type=int, default=4, help="utterances per batch")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds of 16 kHz audio per utterance")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per side (interleaved)")
    p.add_argument("--jax_warmup", type=int, default=1, help="untimed JAX calls after compiling")
    p.add_argument("--torch_warmup", type=int, default=3, help="untimed PyTorch calls (it needs 3+ to settle)")
    p.add_argument("--torch_threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--no_torch", action="store_true", help="JAX only")
    p.add_argument(
        "--peak_flops",
        type=float,
        default=0.0,
        help="device peak FLOP/s for MFU; 0: the device kind's bf16 peak on a TPU/GPU "
        "(xlsr_jax.metrics), 300e9 on a CPU (a 2048^3 f32 matmul on the 2-core dev box)",
    )
    p.add_argument("--dtype", default="float32", help="compute dtype of our model (float32, bfloat16)")
    p.add_argument(
        "--scan_layers",
        type=int,
        default=1,
        help="1: nn.scan over the Transformer blocks (compile time flat in depth); 0: unrolled, as the "
        "presets (the unrolled 12-layer BASE step compiles for many minutes on a busy 2-core box)",
    )
    p.add_argument("--remat", default=None, help="override the config: none, full, dots")
    p.add_argument("--compile_only", action="store_true", help="compile and report FLOPs/memory, no timing")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Configs.
# ---------------------------------------------------------------------------------------------


def get_config(name: str, args: argparse.Namespace):
    """Our `Wav2Vec2Config` for a benchmark config name, with the execution flags applied."""
    from xlsr_jax.models import get_preset

    if name == "small":
        # The peer table: XLS-R flags (layer-norm extractor, pre-LN), the full 7-layer
        # 512-channel conv encoder, a 256-wide 4-layer Transformer.
        cfg = get_preset(
            "large",
            hidden_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=1024,
            codevector_dim=256,
            proj_codevector_dim=256,
        )
    else:
        cfg = get_preset(name)
    overrides: dict[str, Any] = {"dtype": args.dtype}
    overrides["scan_layers"] = bool(args.scan_layers)
    if args.remat is not None:
        overrides["remat"] = args.remat
    return dataclasses.replace(cfg, **overrides)


def make_batch(cfg, batch: int, num_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random unit-variance audio [batch, samples] and an all-False padding mask (equal lengths)."""
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((batch, num_samples)).astype(np.float32)
    return audio, np.zeros((batch, num_samples), bool)


# ---------------------------------------------------------------------------------------------
# JAX side.
# ---------------------------------------------------------------------------------------------


def _cost(compiled) -> tuple[float, int | None]:
    """(FLOPs, peak bytes) of a compiled executable from XLA's own analyses."""
    flops = 0.0
    try:
        analysis = compiled.cost_analysis()
        if isinstance(analysis, (list, tuple)):
            analysis = analysis[0] if analysis else {}
        flops = float((analysis or {}).get("flops", 0.0))
    except Exception:  # noqa: BLE001 - not every backend implements it
        pass
    peak = None
    try:
        mem = compiled.memory_analysis()
        if mem is not None:
            peak = int(
                mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
            )
    except Exception:  # noqa: BLE001
        pass
    return flops, peak


class JaxSide:
    """Our model: a jitted, state-donating train step and a jitted encoder forward."""

    def __init__(self, cfg, audio: np.ndarray, padding: np.ndarray, abstract: bool = False):
        import jax
        import jax.numpy as jnp
        import optax

        from xlsr_jax import losses
        from xlsr_jax.models import Wav2Vec2ForPreTraining, Wav2Vec2Model

        self.jax = jax
        self.cfg = cfg
        model = Wav2Vec2ForPreTraining(cfg)
        encoder = Wav2Vec2Model(cfg)
        self.audio = jnp.asarray(audio)  # [batch, samples]
        self.padding = jnp.asarray(padding)  # [batch, samples]
        keys = jax.random.split(jax.random.PRNGKey(0), 4)
        rngs = {"params": keys[0], "dropout": keys[1], "gumbel": keys[2], "mask": keys[3]}
        init_audio = self.audio[:1, : min(self.audio.shape[1], SAMPLE_RATE)]

        def init(r):
            params = model.init(r, init_audio, None, deterministic=True)["params"]
            return jax.tree.map(
                lambda x: x.unbox() if hasattr(x, "unbox") else x, params, is_leaf=lambda x: hasattr(x, "unbox")
            )

        tx = optax.adamw(1e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01)
        # Compile-only runs (the 48-layer configs) trace against shapes: nothing is allocated.
        params = jax.eval_shape(init, rngs) if abstract else jax.jit(init)(rngs)
        self.num_params = int(sum(x.size for x in jax.tree.leaves(params)))

        def train_step(state, audio, padding):
            params, opt_state, step = state
            rng = jax.random.fold_in(jax.random.PRNGKey(1), step)
            r = {name: jax.random.fold_in(rng, i) for i, name in enumerate(("dropout", "gumbel", "mask"))}

            def loss_fn(p):
                out = model.apply({"params": p}, audio, padding, gumbel_temperature=2.0, deterministic=False, rngs=r)
                return losses.pretraining_loss(out, cfg)

            (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state, step + 1), loss

        def infer(params, audio, padding):
            out = encoder.apply({"params": params["wav2vec2"]}, audio, padding, deterministic=True)
            return out.last_hidden_state  # [batch, frames, hidden]

        self._train = jax.jit(train_step, donate_argnums=(0,))
        self._infer = jax.jit(infer)
        make_state = lambda p: (p, tx.init(p), jnp.zeros((), jnp.int32))  # noqa: E731
        self.state = jax.eval_shape(make_state, params) if abstract else make_state(params)
        self.compiled: dict[str, Any] = {}
        self.info: dict[str, dict[str, Any]] = {}

    def compile(self, step: str) -> None:
        """Lowers and compiles one step, recording compile seconds, FLOPs and peak memory."""
        start, cpu_start = time.perf_counter(), time.process_time()
        if step == "train":
            lowered = self._train.lower(self.state, self.audio, self.padding)
        else:
            lowered = self._infer.lower(self.state[0], self.audio, self.padding)
        compiled = lowered.compile()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        flops, peak = _cost(compiled)
        model_flops = flops
        if self.cfg.scan_layers or self.cfg.remat != "none":
            # XLA counts a while loop's body once, so a scanned step under-reports; and remat's
            # recomputation is not model work. MFU uses the plain twin's count (traced, not compiled).
            model_flops = _twin_flops(self.cfg, step, self.audio, self.padding)
        self.compiled[step] = compiled
        # CPU seconds of tracing + compiling: on a shared machine less noisy than wall time.
        self.info[step] = {
            "compile_s": seconds,
            "compile_cpu_s": cpu_seconds,
            "flops": flops,
            "model_flops": model_flops,
            "peak_bytes": peak,
        }

    def run(self, step: str) -> float:
        """One call of a compiled step, blocking until done; returns seconds."""
        start = time.perf_counter()
        if step == "train":
            self.state, loss = self.compiled["train"](self.state, self.audio, self.padding)
            loss.block_until_ready()
        else:
            self.compiled["infer"](self.state[0], self.audio, self.padding).block_until_ready()
        return time.perf_counter() - start


def _twin_flops(cfg, step: str, audio, padding) -> float:
    """FLOPs of `step` for the unscanned, un-rematerialised twin of `cfg` (HLO cost analysis)."""
    twin = JaxSide(dataclasses.replace(cfg, scan_layers=False, remat="none"), audio, padding, abstract=True)
    if step == "train":
        lowered = twin._train.lower(twin.state, twin.audio, twin.padding)
    else:
        lowered = twin._infer.lower(twin.state[0], twin.audio, twin.padding)
    analysis = lowered.cost_analysis() or {}
    return float(analysis.get("flops", 0.0))


# ---------------------------------------------------------------------------------------------
# PyTorch transformers side.
# ---------------------------------------------------------------------------------------------


def hf_config(cfg):
    """Our config -> `transformers.Wav2Vec2Config` (via the converters' field table)."""
    import transformers

    from xlsr_jax.convert.configs import config_to_hf

    values = config_to_hf(cfg, "Wav2Vec2ForPreTraining")
    values.pop("architectures", None)
    return transformers.Wav2Vec2Config(**values)


class TorchSide:
    """transformers' Wav2Vec2ForPreTraining: the same update (AdamW) and encoder forward."""

    def __init__(self, cfg, audio: np.ndarray, threads: int, device: str = "cpu"):
        import torch
        import transformers
        from transformers.models.wav2vec2.modeling_wav2vec2 import (
            _compute_mask_indices,
            _sample_negative_indices,
        )

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch = torch
        self.device = torch.device(device)
        # Our bfloat16 mode (float32 parameters, 16-bit compute) is autocast on the PyTorch side.
        self.autocast_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(cfg.dtype)
        self.model = transformers.Wav2Vec2ForPreTraining(hf_config(cfg)).to(self.device)
        self.model.set_gumbel_temperature(2.0)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
        self.audio = torch.from_numpy(audio).to(self.device)
        batch, samples = audio.shape
        frames = cfg.feature_lengths(samples)
        # Same density and distractor count as our in-jit sampler; drawn here, off the clock.
        mask = _compute_mask_indices(
            (batch, frames), cfg.mask_time_prob, cfg.mask_time_length, min_masks=cfg.mask_time_min_masks
        )
        negatives = _sample_negative_indices((batch, frames), cfg.num_negatives, mask)
        self.mask = torch.from_numpy(mask).to(self.device)
        self.negatives = torch.from_numpy(negatives).to(self.device)
        self.num_params = int(sum(p.numel() for p in self.model.parameters()))

    def run(self, step: str) -> float:
        """One update or one encoder forward; returns seconds."""
        torch = self.torch
        autocast = torch.autocast(self.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None)
        start = time.perf_counter()
        if step == "train":
            self.model.train()
            with autocast:
                out = self.model(self.audio, mask_time_indices=self.mask, sampled_negative_indices=self.negatives)
            self.opt.zero_grad(set_to_none=True)
            out.loss.backward()
            self.opt.step()
        else:
            self.model.eval()
            with torch.inference_mode(), autocast:
                self.model.wav2vec2(self.audio)
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # CUDA calls return before the work is done
        return time.perf_counter() - start


def torch_device() -> str:
    """Where the PyTorch side runs: the kind of device JAX runs on (ImportError where torch lacks it)."""
    import jax
    import torch

    backend = jax.default_backend()
    if backend == "cpu":
        return "cpu"
    if backend == "gpu" and torch.cuda.is_available():
        return "cuda"
    # A PyTorch number from another kind of device would make the ratio meaningless.
    raise ImportError(f"JAX runs on {backend} and this torch has no such device")


# ---------------------------------------------------------------------------------------------
# Driver.
# ---------------------------------------------------------------------------------------------


def resolve_peak_flops(configured: float) -> float:
    """`--peak_flops`, else the device kind's table entry (TPU/GPU), else `CPU_PEAK_FLOPS`."""
    from xlsr_jax import metrics

    return metrics.peak_flops_per_device(configured) or CPU_PEAK_FLOPS


def measure_roofline(repeats: int = 10, dtype: str = "float32") -> dict[str, float]:
    """What this machine delivers right now: an n^3 matmul in `dtype` (FLOP/s) and a 256 MB pass.

    n is 2048 on a CPU and 8192 on an accelerator (where a 2048^3 matmul is mostly launch cost).
    Shared and virtualised hosts vary from day to day (the same box measured 300 and 150 GFLOP/s
    on the matmul), so MFU is also reported against this in-run peak.
    """
    import jax
    import jax.numpy as jnp

    def best(fn, x, feed_back: bool = False) -> float:
        x = fn(x).block_until_ready() if feed_back else x
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            y = fn(x).block_until_ready()
            times.append(time.perf_counter() - start)
            x = y if feed_back else x
        return min(times)

    n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jnp.ones((n, n), dtype)  # the model's compute dtype
    matmul_s = best(jax.jit(lambda a: a @ a), a)
    big = jnp.ones((64 * 1024 * 1024,), jnp.float32)  # 256 MB: well past any cache
    # Donated, so the output reuses the input's pages: a fresh 256 MB output per call measures the
    # kernel zeroing new pages (3-5 GB/s here), not the memory bus (about 30 GB/s).
    scale_s = best(jax.jit(lambda x: x * 0.5, donate_argnums=0), big, feed_back=True)
    return {"matmul_flops": 2 * n**3 / matmul_s, "memory_bytes_per_s": 2 * big.nbytes / scale_s}


def _summary(times: list[float], audio_seconds: float) -> dict[str, Any]:
    med = statistics.median(times)
    return {"median_s": med, "min_s": min(times), "times_s": times, "audio_sec_per_sec": audio_seconds / med}


def benchmark_config(name: str, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """All steps of one config; returns its JSON record."""
    cfg = get_config(name, args)
    num_samples = int(args.seconds * SAMPLE_RATE)
    audio, padding = make_batch(cfg, args.batch, num_samples)
    audio_seconds = args.batch * args.seconds
    steps = [s for s in args.steps.split(",") if s]
    record: dict[str, Any] = {
        "config": name,
        "frames": cfg.feature_lengths(num_samples),
        "model": {
            k: getattr(cfg, k)
            for k in (
                "hidden_size",
                "num_hidden_layers",
                "intermediate_size",
                "conv_dim",
                "feat_extract_norm",
                "do_stable_layer_norm",
                "dtype",
                "scan_layers",
                "remat",
            )
        },
    }
    ours = JaxSide(cfg, audio, padding, abstract=args.compile_only)
    record["num_params"] = ours.num_params
    theirs = None
    if not args.no_torch and not args.compile_only:
        try:
            theirs = TorchSide(cfg, audio, args.torch_threads, torch_device())
            record["torch_num_params"] = theirs.num_params
        except ImportError as e:
            record["torch_skipped"] = f"no PyTorch side: {e}"
    for step in steps:
        if step == "translate":
            record[step] = translation_benchmark(name, cfg, args, audio, padding, log)
            continue
        log(f"{name}/{step}: compiling")
        ours.compile(step)
        result: dict[str, Any] = {"jax": dict(ours.info[step])}
        if not args.compile_only:
            for _ in range(args.jax_warmup):
                ours.run(step)
            if theirs is not None:
                for _ in range(args.torch_warmup):
                    theirs.run(step)
            jax_times, torch_times = [], []
            for i in range(args.repeats):
                # Alternate which side goes first so slow drifts in machine load cancel.
                order = (ours, theirs) if i % 2 == 0 else (theirs, ours)
                for side in order:
                    if side is ours:
                        jax_times.append(ours.run(step))
                    elif side is not None:
                        torch_times.append(side.run(step))
            result["jax"].update(_summary(jax_times, audio_seconds))
            flops = result["jax"]["model_flops"]
            measured = args.measured_peak_flops
            result["jax"]["mfu"] = flops / result["jax"]["median_s"] / args.peak_flops if flops else None
            result["jax"]["mfu_measured_peak"] = flops / result["jax"]["median_s"] / measured if flops else None
            if theirs is not None:
                result["torch"] = _summary(torch_times, audio_seconds)
                # Same work, so the same FLOP count gives PyTorch's utilisation too.
                result["torch"]["mfu"] = flops / result["torch"]["median_s"] / args.peak_flops if flops else None
                result["torch"]["mfu_measured_peak"] = flops / result["torch"]["median_s"] / measured if flops else None
                result["speedup_vs_torch"] = result["torch"]["median_s"] / result["jax"]["median_s"]
        log(f"{name}/{step}: {json.dumps(result)}")
        record[step] = result
    return record


def translation_benchmark(name, cfg, args, audio, padding, log) -> dict[str, Any]:
    """The `translate` step: generation speed and its cost per position (see the docstring).

    The encoder is `cfg` with the XLS-R adapter; the decoder is mBART-50's (12 x 1024, 250k
    tokens) except for the tiny config, which gets the tiny decoder. EOS is set to an id the
    model cannot emit, so every run generates exactly max_length - 1 tokens.
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from xlsr_jax import generation
    from xlsr_jax.models.decoder import MBartDecoderConfig, tiny_decoder_config
    from xlsr_jax.models.speech_translation import SpeechTranslationConfig, Wav2Vec2ForSpeechTranslation

    encoder = dataclasses.replace(cfg, add_adapter=True)
    decoder = tiny_decoder_config(d_model=encoder.hidden_size) if name == "tiny" else MBartDecoderConfig()
    decoder = dataclasses.replace(decoder, dtype=args.dtype)
    lengths = sorted(int(n) + 1 for n in args.translate_lengths.split(","))  # + the start token
    decoder = dataclasses.replace(decoder, max_position_embeddings=max(decoder.max_position_embeddings, lengths[-1]))
    model = Wav2Vec2ForSpeechTranslation(SpeechTranslationConfig(encoder, decoder))
    init = jax.jit(lambda: model.init(jax.random.PRNGKey(0), audio[:1, :800], None, jnp.zeros((1, 2), jnp.int32)))
    params = nn.meta.unbox(init()["params"])
    audio_j, padding_j = jnp.asarray(audio), jnp.asarray(padding)
    out: dict[str, Any] = {"decoder_layers": decoder.decoder_layers, "d_model": decoder.d_model}
    out["vocab_size"] = decoder.vocab_size
    times = {}
    for length in lengths:
        gen = generation.GenerationConfig(max_length=length, eos_token_id=decoder.vocab_size)
        t0 = time.perf_counter()
        jax.block_until_ready(generation.generate(model, params, audio_j, padding_j, gen))
        compile_s = time.perf_counter() - t0
        runs = []
        for _ in range(args.repeats * 3):
            t0 = time.perf_counter()
            jax.block_until_ready(generation.generate(model, params, audio_j, padding_j, gen))
            runs.append(time.perf_counter() - t0)
        times[length] = statistics.median(runs)
        out[f"generate_{length - 1}_tokens"] = {"median_s": times[length], "first_call_s": compile_s}
        log(f"{name}/translate: {length - 1} tokens in {times[length]:.4f} s")
    short, long = lengths[0], lengths[-1]
    per_token = (times[long] - times[short]) / (long - short)
    # From the two lengths' difference; lost in noise when the encoder dominates (tiny decoder).
    out["seconds_per_token_from_lengths"] = per_token
    out["end_to_end_tokens_per_sec"] = args.batch * (long - 1) / times[long]

    # One cached step near the start and near the end of a long cache: same work by design.
    hidden, frame_padding = jax.jit(lambda p: model.apply({"params": p}, audio_j, padding_j, method="encode"))(params)
    cache = jax.jit(lambda p: model.apply({"params": p}, hidden, frame_padding, long, method="init_cache"))(params)
    step = jax.jit(lambda p, tok, c: model.apply({"params": p}, tok, c, method="decode_step")[0])
    tokens = jnp.full((args.batch, 1), 2, jnp.int32)
    for label, index in (("step_s_at_position_1", 1), (f"step_s_at_position_{long - 2}", long - 2)):
        at = cache._replace(index=jnp.asarray(index, jnp.int32))
        jax.block_until_ready(step(params, tokens, at))
        runs = []
        for _ in range(max(args.repeats, 3) * 5):
            t0 = time.perf_counter()
            jax.block_until_ready(step(params, tokens, at))
            runs.append(time.perf_counter() - t0)
        out[label] = statistics.median(runs)
    early, late = out["step_s_at_position_1"], out[f"step_s_at_position_{long - 2}"]
    out["late_over_early_step"] = late / early
    out["decoder_tokens_per_sec"] = args.batch / ((early + late) / 2)  # cached steps, batch rows each
    log(f"{name}/translate: {json.dumps(out)}")
    return out


def main(argv=None) -> dict[str, Any]:
    """Runs the benchmark and prints one JSON document."""
    args = parse_args(argv)
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIG_NAMES]
    if unknown:
        raise SystemExit(f"unknown configs {unknown}; choose from {CONFIG_NAMES}")
    import jax

    args.peak_flops = resolve_peak_flops(args.peak_flops)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report: dict[str, Any] = {
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
        "batch": args.batch,
        "seconds_per_utterance": args.seconds,
        "repeats": args.repeats,
        "peak_flops": args.peak_flops,
        # Other jobs share the machine: the load average says how far to trust absolute times.
        "load_average_start": os.getloadavg(),
        "configs": [],
    }
    roofline = measure_roofline(dtype=args.dtype)
    args.measured_peak_flops = roofline["matmul_flops"]
    report["measured_roofline"] = roofline
    log(f"measured roofline: {json.dumps(roofline)}")
    try:
        import torch
        import transformers

        report["torch_version"] = torch.__version__
        report["transformers_version"] = transformers.__version__
    except ImportError:
        pass
    for name in names:
        report["configs"].append(benchmark_config(name, args, log))
    report["load_average_end"] = os.getloadavg()
    report["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
