"""TPU readiness without a TPU: ahead-of-time compilation of the real train step for a TPU pod.

With `libtpu` installed (the `tpu` extra of setup.py), JAX can describe a TPU topology on a CPU
host (`jax.experimental.topologies.get_topology_desc`) and compile for it. This script builds the
trainer's update step exactly as `xlsr_jax.trainer.train_and_evaluate` does (same task, optimizer,
logical axis rules, state shardings derived from the parameters' logical annotations, batch split
over (data, fsdp), donated state), but from abstract `jax.ShapeDtypeStruct` state and batch, so no
parameter is ever allocated, and compiles it for the topology. It reports, per chip:

  - memory of the compiled step (XLA's buffer assignment): arguments (state + batch), outputs,
    temporaries, aliased (donated) bytes, and whether the peak fits the chip's HBM;
  - FLOPs per step: XLA's cost analysis (which counts a loop body once: a scanned Transformer
    shows as one layer), and an analytic count of the matmuls and convolutions: model FLOPs
    (3x forward) and hardware FLOPs (plus the forward recomputed under remat);
  - a roofline estimate of the step time, max(hardware FLOPs / bf16 peak, XLA's bytes accessed /
    HBM bandwidth), and the MFU that time would give. Collectives and imperfect overlap are not
    in it, so it is a lower bound on time and an upper bound on MFU: a measured step on the pod
    is what settles them;
  - compile time.

A batch is `rows` crops of `--crop_seconds` (the recipes' max_sample_size: 20 s) of 16 kHz audio.
`--batch_seconds` takes a comma list of global audio seconds per step and `--mesh` may repeat:
the script compiles the candidates in order (largest batch first for each mesh) and stops at the
first that fits, so a search over meshes and batches is one call. JSON goes to stdout.

  .venv/bin/python experiments/aot_compile.py --config configs/xls_r.py:size=1b --topology v5e:4x4 \
      --set model.dtype=bfloat16 --batch_seconds 1280,640,320
  .venv/bin/python experiments/aot_compile.py --config configs/xls_r.py:size=300m --topology v4:2x2x1 \
      --mesh data=4,fsdp=1 --mesh data=1,fsdp=4 --batch_seconds 240,160

The step compiled is the config's task: a pretraining recipe (configs/xls_r.py, ...) or a
fine-tuning one (configs/finetune/*.py, task "ctc" from xlsr_jax/tasks, with its own optimizer
and frozen parameters), e.g. CTC on XLS-R 1B (a vocabulary file stands in for the corpus):

  .venv/bin/python experiments/aot_compile.py --topology v5e:4x4 \
      --config configs/finetune/common_voice.py:preset=xls_r_1b \
      --set data.vocabulary.path=vocab.json
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import re
import sys
import time
from typing import Any

# libtpu looks for a TPU (and its metadata server) when JAX initialises its backends; compiling
# for a topology description needs none of that, so keep JAX's own backend on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
# libtpu takes /tmp/libtpu_lockfile for the whole process; a test run or another compile on the
# same host would otherwise make this one fail. Nothing here touches a real TPU.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from xlsr_jax.constants import SAMPLE_RATE  # noqa: E402

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """What the estimates need to know about one TPU generation (per chip, vendor data sheets)."""

    name: str
    hbm_bytes: int  # HBM per chip
    peak_flops: float  # dense bf16 FLOP/s per chip
    hbm_bandwidth: float  # bytes/s per chip
    megacore: bool  # two TensorCores that JAX drives as one device


CHIPS = {
    "v4": Chip("TPU v4", 32 * GiB, 275e12, 1228e9, True),
    "v5e": Chip("TPU v5e", 16 * GiB, 197e12, 819e9, False),
    "v5p": Chip("TPU v5p", 95 * GiB, 459e12, 2765e9, True),
    "v6e": Chip("TPU v6e", 32 * GiB, 918e12, 1640e9, False),
}


def tpu_topology(name: str) -> tuple[Chip, list[jax.Device]]:
    """TPU devices of a topology such as "v4:2x2x1" (v4-8), "v5e:4x4" (v5e-16), "v5e:8x8".

    v4 and v5p chips are described in megacore mode (one device per chip), as JAX runs them.

    Returns:
      (chip spec, one device per chip).
    Raises:
      ValueError: unknown generation; RuntimeError: libtpu is not installed.
    """
    from jax.experimental import topologies

    generation = name.split(":")[0]
    if generation not in CHIPS:
        raise ValueError(f"unknown TPU generation in {name!r}; known: {sorted(CHIPS)}")
    chip = CHIPS[generation]
    kwargs = {"chip_config_name": "megacore"} if chip.megacore else {}
    try:
        desc = topologies.get_topology_desc(platform="tpu", topology_name=name, **kwargs)
    except Exception as e:  # noqa: BLE001 - libtpu missing surfaces as several exception types
        raise RuntimeError(
            f"cannot describe TPU topology {name!r} (is libtpu installed? "
            f"pip install -c constraints.txt -e '.[tpu]'): {e}"
        ) from e
    return chip, list(desc.devices)


# ---------------------------------------------------------------------------------------------
# Config.
# ---------------------------------------------------------------------------------------------


# Reports written before the XLS-R sizes became one recipe name the old per-size files.
_LEGACY_RECIPES = {f"configs/xls_r_{size}.py": f"configs/xls_r.py:size={size}" for size in ("300m", "1b", "2b")}


def recipe_name(spec: str) -> str:
    """A report's model column: "configs/xls_r.py:size=1b" -> "xls_r_1b", "configs/xlsr_53.py" -> "xlsr_53"."""
    path, _, arg = _LEGACY_RECIPES.get(spec, spec).partition(":")
    name = os.path.basename(path).split(".py")[0]
    size = dict(item.partition("=")[::2] for item in arg.split(",") if "=" in item).get("size")
    return f"{name}_{size}" if size else name


def load_config(spec: str, overrides: list[str]):
    """`configs/x.py[:arg]` -> its `get_config(arg)`, with `key.path=value` overrides applied."""
    path, _, arg = _LEGACY_RECIPES.get(spec, spec).partition(":")
    module_spec = importlib.util.spec_from_file_location("aot_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key.path=value, got {item!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare word is a string
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"--set {key}: no such config field")
        node[leaf] = value
    return config


def parse_mesh(text: str) -> dict[str, int]:
    """Parses "data=2,fsdp=8" into {"data": 2, "fsdp": 8, "tensor": 1}; one size may be -1."""
    out = {"data": 1, "fsdp": 1, "tensor": 1}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in out:
            raise ValueError(f"unknown mesh axis {key!r} in {text!r}; use data, fsdp, tensor")
        out[key] = int(value)
    return out


# ---------------------------------------------------------------------------------------------
# The abstract train step.
# ---------------------------------------------------------------------------------------------


def abstract_batch(task_name: str, rows: int, samples: int, data_cfg, mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """A global batch as the input pipeline makes it, as ShapeDtypeStructs split over (data, fsdp).

    Keys and dtypes follow data_pipelines' batches (audio, padding_mask, language, valid; CTC adds
    labels and label_padding of ceil(samples / samples_per_label) tokens).
    """
    from xlsr_jax import sharding

    s = sharding.batch_sharding(mesh)
    batch = {
        "audio": jax.ShapeDtypeStruct((rows, samples), jnp.float32, sharding=s),  # [B, S]
        "padding_mask": jax.ShapeDtypeStruct((rows, samples), jnp.bool_, sharding=s),  # [B, S]
        "language": jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=s),  # [B]
        "valid": jax.ShapeDtypeStruct((rows,), jnp.bool_, sharding=s),  # [B]
    }
    if task_name in ("ctc", "st"):
        # ctc: labels per bucket length; st: one target length (data.target.max_length tokens).
        labels = data_cfg.target.max_length if task_name == "st" else math.ceil(samples / data_cfg.samples_per_label)
        batch["labels"] = jax.ShapeDtypeStruct((rows, labels), jnp.int32, sharding=s)  # [B, L]
        batch["label_padding"] = jax.ShapeDtypeStruct((rows, labels), jnp.bool_, sharding=s)  # [B, L]
    return batch


def build_train_step(config, mesh):
    """The trainer's jitted update step and its abstract, sharded state for `mesh`.

    `trainer.build_training` is what `train_and_evaluate` runs; nothing is allocated.

    Returns:
      (jitted step, abstract state (ShapeDtypeStructs with shardings), context manager factory
      that puts the mesh and the logical rules in scope for tracing, task).
    """
    from xlsr_jax import trainer

    training = trainer.build_training(config, mesh)
    return training.train_step, training.abstract_state, training.tracing, training.task


# ---------------------------------------------------------------------------------------------
# Analytic model FLOPs.
# ---------------------------------------------------------------------------------------------


def model_flops_per_step(
    cfg, rows: int, samples: int, task: str = "pretrain", decoder=None, target_tokens: int = 0
) -> tuple[float, float]:
    """Matmul and convolution FLOPs of one training step, counted from the architecture.

    Counts the conv feature encoder, feature projection, positional convolution, Transformer
    (projections, attention scores and mixing, feed-forward) and the task's head: for
    pretraining the quantizer and the contrastive projections/logits over all frames (an upper
    bound for the logits, which only masked frames need); for CTC the vocabulary projection; for
    speech translation (`decoder`, `target_tokens`) the adapter and the whole decoder.
    Elementwise work, norms and the loss are left out (a few percent). A frozen feature encoder
    (feature_grad_mult 0, fine-tuning) runs forward only.

    XLA's own count cannot replace this: it counts the body of a loop once, so a scanned
    Transformer (scan_layers) shows up as one layer.

    Returns:
      (model FLOPs: forward + backward = 3x forward, the numerator of MFU;
       hardware FLOPs: the same plus the Transformer forward recomputed under remat).
    """
    conv = 0.0
    length = samples
    cin = 1
    for cout, kernel, stride in zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride):
        length = (length - kernel) // stride + 1
        conv += 2 * length * kernel * cin * cout
        cin = cout
    frames = length
    h, f = cfg.hidden_size, cfg.intermediate_size
    other = 2 * frames * cfg.conv_dim[-1] * h  # feature projection
    other += 2 * frames * cfg.num_conv_pos_embeddings * h * (h // cfg.num_conv_pos_embedding_groups)
    layers = cfg.num_hidden_layers * (2 * frames * (4 * h * h + 2 * h * f) + 2 * 2 * frames * frames * h)
    if task == "pretrain":
        gv = cfg.num_codevector_groups * cfg.num_codevectors_per_group
        other += 2 * frames * cfg.conv_dim[-1] * gv  # quantizer logits
        other += 2 * frames * gv * (cfg.codevector_dim // cfg.num_codevector_groups)  # code lookup
        other += 2 * frames * h * cfg.proj_codevector_dim  # project_hid
        other += 2 * frames * cfg.codevector_dim * cfg.proj_codevector_dim  # project_q
        other += 2 * frames * (1 + cfg.num_negatives) * cfg.proj_codevector_dim  # cosine logits
    elif task == "ctc":
        other += 2 * frames * h * cfg.vocab_size
    elif task == "st":  # adapter, then the decoder over `target` tokens cross-attending to it
        dec, target = decoder, target_tokens
        w, d, df = cfg.adapter_hidden_size, dec.d_model, dec.decoder_ffn_dim
        a = frames
        if w != h:
            other += 2 * frames * h * w
        for _ in range(cfg.num_adapter_layers):
            a = (a - 1) // cfg.adapter_stride + 1
            other += 2 * a * cfg.adapter_kernel_size * w * 2 * w
        per_layer = 2 * target * (4 * d * d + 2 * d * df) + 2 * 2 * target * target * d  # self-attention + FFN
        per_layer += 2 * target * 2 * d * d + 2 * a * 2 * w * d + 2 * 2 * target * a * d  # cross-attention
        other += dec.decoder_layers * per_layer + 2 * target * d * dec.vocab_size  # + output projection
    conv_factor = 3.0 if cfg.feature_grad_mult > 0 else 1.0
    model = conv_factor * conv + 3.0 * (other + layers)
    hardware = model + (layers if cfg.remat != "none" else 0.0)
    return model * rows, hardware * rows


# ---------------------------------------------------------------------------------------------
# Compile and report.
# ---------------------------------------------------------------------------------------------


def _cost(compiled) -> dict[str, float]:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return dict(analysis or {})


def roofline(
    cfg, task_name: str, chip: Chip, rows: int, samples: int, chips: int, bytes_accessed: float, target_tokens: int = 0
):
    """Per-chip FLOPs and the roofline step-time / MFU estimate of one step.

    Compute time comes from the analytic count (XLA's counts a scanned layer once); memory time
    from XLA's bytes accessed (which also counts a loop body once, so it is a lower bound).
    """
    decoder, target = None, 0
    if task_name == "st":  # a SpeechTranslationConfig: encoder + decoder
        cfg, decoder, target = cfg.encoder, cfg.decoder, target_tokens
    flops = model_flops_per_step(cfg, rows, samples, task_name, decoder, target)
    model_flops, hardware_flops = (x / chips for x in flops)
    compute_time = hardware_flops / chip.peak_flops
    memory_time = bytes_accessed / chip.hbm_bandwidth
    step_time = max(compute_time, memory_time)
    return {
        "model_flops_per_chip": model_flops,
        "hardware_flops_per_chip": hardware_flops,
        "roofline_step_seconds": step_time,
        "roofline_bound": "compute" if compute_time >= memory_time else "memory",
        "roofline_mfu": model_flops / (step_time * chip.peak_flops) if step_time else 0.0,
        "roofline_audio_seconds_per_second": rows * samples / SAMPLE_RATE / step_time if step_time else 0.0,
    }


def compile_one(
    config, task_name: str, chip: Chip, devices, mesh_sizes: dict[str, int], rows: int, samples: int
) -> dict[str, Any]:
    """Lowers and compiles one (task, mesh, batch) and returns the report entry."""
    from xlsr_jax import sharding

    config = config.copy_and_resolve_references()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = (
        mesh_sizes["data"],
        mesh_sizes["fsdp"],
        mesh_sizes["tensor"],
    )
    mesh = sharding.create_mesh(mesh_sizes["data"], mesh_sizes["fsdp"], mesh_sizes["tensor"], devices=devices)
    shards = sharding.batch_shards(mesh)
    entry: dict[str, Any] = {
        "task": task_name,
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "rows": rows,
        "crop_seconds": samples / SAMPLE_RATE,
        "batch_audio_seconds": rows * samples / SAMPLE_RATE,
        "audio_seconds_per_chip": rows * samples / SAMPLE_RATE / len(devices),
    }
    if rows % shards:
        entry["error"] = f"{rows} rows do not split over data x fsdp = {shards}"
        return entry

    t0 = time.perf_counter()
    step, abstract_state, tracing, task = build_train_step(config, mesh)
    batch = abstract_batch(task_name, rows, samples, config.data, mesh)
    with tracing():
        lowered = step.lower(abstract_state, batch)
    t1 = time.perf_counter()
    try:
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
        # The TPU compiler itself refuses a program whose buffers exceed HBM: that is "does not
        # fit", with the compiler's own figure of what it needed.
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        message = str(e).split("\n")[0]
        needed = re.search(r"\(([0-9.]+)([KMGT])\)", message)
        entry.update(
            {
                "fits": False,
                "compile_error": message,
                "needed_gib_per_chip": (
                    float(needed.group(1)) * {"K": 2**-20, "M": 2**-10, "G": 1, "T": 2**10}[needed.group(2)]
                )
                if needed
                else None,
                "lower_seconds": t1 - t0,
                "compile_seconds": time.perf_counter() - t1,
            }
        )
        return entry
    t2 = time.perf_counter()

    mem = compiled.memory_analysis()
    argument = int(mem.argument_size_in_bytes)
    output = int(mem.output_size_in_bytes)
    alias = int(mem.alias_size_in_bytes)
    temp = int(mem.temp_size_in_bytes)
    code = int(mem.generated_code_size_in_bytes)
    peak = argument + output - alias + temp + code
    cost = _cost(compiled)
    xla_flops = float(cost.get("flops", 0.0))  # per chip (the partitioned program)
    bytes_accessed = float(cost.get("bytes accessed", 0.0))
    target = config.data.target.max_length if task_name == "st" else 0
    estimate = roofline(task.model_config, task_name, chip, rows, samples, len(devices), bytes_accessed, target)
    params = abstract_state.params
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    replicated = sharding.replicated_parameters(params, jax.tree.map(lambda x: x.sharding, params))
    entry.update(
        {
            "num_params": num_params,
            "compute_dtype": getattr(task.model_config, "encoder", task.model_config).dtype,
            "scan_layers": getattr(task.model_config, "encoder", task.model_config).scan_layers,
            "remat": getattr(task.model_config, "encoder", task.model_config).remat,
            "memory_gib_per_chip": {
                "arguments": argument / GiB,
                "outputs": output / GiB,
                "aliased": alias / GiB,
                "temporaries": temp / GiB,
                "code": code / GiB,
                "peak": peak / GiB,
                "hbm": chip.hbm_bytes / GiB,
            },
            "fits": peak <= chip.hbm_bytes,
            "large_replicated_params": [p for p, _ in replicated],
            "xla_flops_per_chip": xla_flops,
            "bytes_accessed_per_chip": bytes_accessed,
            **estimate,
            "lower_seconds": t1 - t0,
            "compile_seconds": t2 - t1,
        }
    )
    return entry


def markdown_table(reports: list[dict[str, Any]]) -> str:
    """One markdown row per compiled candidate of saved JSON reports (for experiments/aot_results.md)."""
    lines = [
        "| model | topology | chips | mesh (data x fsdp) | batch (audio s) | s/chip | fits | peak GiB/chip "
        "(args + temps) | model TFLOP/chip (with remat) | ideal step (s) | bound | MFU ceiling "
        "| compile (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        for e in report["results"]:
            params = recipe_name(report["config"])
            mesh = f"{e['mesh']['data']} x {e['mesh']['fsdp']}"
            head = (
                f"| {params} | {report['topology']} | {report['chips']} | {mesh} | {e['batch_audio_seconds']:.0f} "
                f"| {e['audio_seconds_per_chip']:.0f} | {'yes' if e.get('fits') else 'no'} "
            )
            if "memory_gib_per_chip" not in e:
                needed = e.get("needed_gib_per_chip")
                why = f"needs {needed:.1f} GiB of temporaries" if needed else e.get("error", "")
                lines.append(head + f"| {why} | | | | | {e.get('compile_seconds', 0):.0f} |")
                continue
            if "hardware_flops_per_chip" not in e:  # a report from before the analytic roofline
                from xlsr_jax.models import Wav2Vec2Config

                cfg = Wav2Vec2Config.from_dict(load_config(report["config"], report["overrides"]).model.to_dict())
                chip = CHIPS[report["topology"].split(":")[0]]
                samples = int(round(e["crop_seconds"] * SAMPLE_RATE))
                e.update(
                    roofline(cfg, e["task"], chip, e["rows"], samples, report["chips"], e["bytes_accessed_per_chip"])
                )
            m = e["memory_gib_per_chip"]
            lines.append(
                head + f"| {m['peak']:.1f} ({m['arguments']:.1f} + {m['temporaries']:.1f}) "
                f"| {e['model_flops_per_chip'] / 1e12:.0f} ({e['hardware_flops_per_chip'] / 1e12:.0f}) "
                f"| {e['roofline_step_seconds']:.2f} | {e['roofline_bound']} | {e['roofline_mfu']:.0%} "
                f"| {e['compile_seconds']:.0f} |"
            )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="configs/<recipe>.py[:arg]")
    p.add_argument("--topology", required=True, help='TPU topology, e.g. "v4:2x2x1", "v5e:4x4", "v5e:8x8"')
    p.add_argument(
        "--mesh",
        action="append",
        default=[],
        help="data=..,fsdp=..[,tensor=..]; repeat to try several (default: the recipe's)",
    )
    p.add_argument(
        "--batch_seconds",
        default="",
        help="comma list of global audio seconds per step, tried largest first (default: "
        "60 s per chip = fairseq's LARGE max_tokens 1.2M samples in 20 s crops)",
    )
    p.add_argument(
        "--crop_seconds",
        type=float,
        default=0.0,
        help="row length in seconds (default: the recipe's data.max_sample_size)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        help="config override key.path=value (e.g. model.dtype=bfloat16); repeatable",
    )
    p.add_argument("--all", action="store_true", help="compile every candidate, not just up to the first fit")
    return p.parse_args(argv)


def main(argv=None) -> dict[str, Any]:
    """Runs the candidates and prints (and returns) the JSON report."""
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--table":
        # `aot_compile.py --table a.json b.json ...`: markdown rows from saved reports.
        print(markdown_table([json.load(open(path, encoding="utf-8")) for path in sys.argv[2:]]))
        return {}
    args = parse_args(argv)
    from xlsr_jax import tasks

    config = load_config(args.config, args.overrides)
    chip, devices = tpu_topology(args.topology)
    crop_seconds = args.crop_seconds or config.data.max_sample_size / SAMPLE_RATE
    samples = int(round(crop_seconds * SAMPLE_RATE))
    samples -= samples % config.data.pad_multiple  # buckets are multiples of the conv stride
    meshes = [parse_mesh(m) for m in args.mesh] or [
        {"data": config.mesh.data, "fsdp": config.mesh.fsdp, "tensor": config.mesh.tensor}
    ]
    if args.batch_seconds:
        batches = sorted((float(s) for s in args.batch_seconds.split(",")), reverse=True)
    else:
        batches = [60.0 * len(devices)]

    report: dict[str, Any] = {
        "config": args.config,
        "overrides": args.overrides,
        "topology": args.topology,
        "chip": chip.name,
        "chips": len(devices),
        "jax": jax.__version__,
        "results": [],
        "skipped": [],
    }
    for task_name in [config.task]:
        if task_name not in tasks.TASKS:
            report["skipped"].append(
                {
                    "task": task_name,
                    "reason": f"no task {task_name!r} in xlsr_jax.tasks.TASKS (have {sorted(tasks.TASKS)})",
                }
            )
            continue
        found = False
        for mesh_sizes in meshes:
            for seconds in batches:
                rows = int(round(seconds * SAMPLE_RATE / samples))
                entry = compile_one(config, task_name, chip, devices, mesh_sizes, rows, samples)
                report["results"].append(entry)
                print(json.dumps(entry), file=sys.stderr, flush=True)  # progress: big compiles take minutes
                if entry.get("fits") and not args.all:
                    found = True
                    break
            if found:
                break
        fitting = [i for i, e in enumerate(report["results"]) if e["task"] == task_name and e.get("fits")]
        # Index into "results" of the first candidate that fits (largest batch, first mesh).
        report.setdefault("chosen", {})[task_name] = fitting[0] if fitting else None
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
