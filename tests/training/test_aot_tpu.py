"""The real train step compiles for a TPU pod slice, with FSDP really sharding the state.

Ahead-of-time compilation on this CPU host against a TPU topology description (libtpu from the
`tpu` extra): no TPU is needed and nothing is allocated. Skipped, with the reason, where libtpu
is not installed. About 40 s of CPU (the TPU compiler is slow even on the tiny model; the batch is
kept to 0.25 s of audio per row because compile time grows with the number of frames).
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

import pytest

# libtpu holds /tmp/libtpu_lockfile per process; another test process or a compile elsewhere on
# the host must not make this one fail. Must be set before libtpu is first loaded.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

pytestmark = pytest.mark.slow  # compiles the train step for TPU topologies

pytest.importorskip("libtpu", reason="libtpu is not installed: pip install -c constraints.txt -e '.[tpu]'")

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOPOLOGY = "v5e:2x2"  # 4 chips: a (data=2, fsdp=2) mesh
ROWS, SAMPLES = 4, 4000  # one 0.25 s row per chip
MIN_SHARDED_SIZE = 2048  # elements (per layer) from which a tensor must be split by FSDP


def _load_aot():
    spec = importlib.util.spec_from_file_location("aot_compile", ROOT / "experiments" / "aot_compile.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["aot_compile"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compiled_tiny():
    """The demo (tiny preset) pretraining step, lowered and compiled for v5e:2x2."""
    aot = _load_aot()
    chip, devices = aot.tpu_topology(TOPOLOGY)  # libtpu is importable: a failure here is a bug
    from xlsr_jax import sharding

    config = aot.load_config(str(ROOT / "configs" / "demo.py"), [])
    mesh = sharding.create_mesh(2, 2, 1, devices=devices)
    step, abstract_state, tracing, task = aot.build_train_step(config, mesh)
    batch = aot.abstract_batch("pretrain", ROWS, SAMPLES, config.data, mesh)
    with tracing():
        lowered = step.lower(abstract_state, batch)
    return aot, chip, mesh, abstract_state, task, lowered.compile()


def test_topology_is_tpu(compiled_tiny):
    _, _, mesh, *_ = compiled_tiny
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 1}
    assert all(d.platform == "tpu" for d in mesh.devices.flat)
    assert "v5 lite" in mesh.devices.flat[0].device_kind


def test_large_state_is_sharded_not_replicated(compiled_tiny):
    """Every large parameter and its Adam moments enter the compiled step split over fsdp."""
    _, _, _, abstract_state, _, compiled = compiled_tiny
    (state_shardings, batch_shardings), _ = compiled.input_shardings
    paths = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    shardings = jax.tree.leaves(state_shardings)
    assert len(paths) == len(shardings)
    large = []
    for (path, leaf), s in zip(paths, shardings):
        name = jax.tree_util.keystr(path)
        if not (".params" in name or ".opt_state" in name):
            continue
        if int(np.prod(leaf.shape)) < MIN_SHARDED_SIZE:
            continue
        large.append(name)
        assert not s.is_fully_replicated, f"{name} {leaf.shape} is replicated on every chip"
        assert "fsdp" in jax.tree.leaves(tuple(s.spec)), f"{name}: {s.spec} does not use the fsdp axis"
        # Each chip holds half of it (fsdp = 2), not a copy.
        assert s.shard_shape(leaf.shape) != tuple(leaf.shape)
    # params, mu and nu of: conv layers, projections, attention, feed-forward, quantizer...
    assert sum(".params" in n for n in large) >= 10
    assert sum(".mu" in n for n in large) == sum(".nu" in n for n in large) == sum(".params" in n for n in large)
    audio = batch_shardings["audio"]
    assert audio.shard_shape((ROWS, SAMPLES)) == (1, SAMPLES)  # batch split over data x fsdp = 4


def test_memory_and_cost_reported(compiled_tiny):
    """Per-chip state is about half a copy (fsdp = 2); XLA reports memory and FLOPs that match the
    model's analytic count."""
    aot, _, _, abstract_state, task, compiled = compiled_tiny
    (state_shardings, _), _ = compiled.input_shardings
    leaves = jax.tree.leaves(abstract_state)
    full = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in leaves)
    per_chip = sum(
        int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
        for x, s in zip(leaves, jax.tree.leaves(state_shardings))
    )
    assert per_chip < 0.6 * full, (per_chip, full)
    # XLA's buffer sizes use TPU tiled layouts (small dims padded to 128 lanes), so they are not
    # comparable to the logical bytes on a model this small; they must be there and consistent.
    mem = compiled.memory_analysis()
    assert mem.argument_size_in_bytes > 0 and mem.temp_size_in_bytes > 0
    assert 0 < mem.alias_size_in_bytes <= mem.argument_size_in_bytes  # the state is donated
    flops = aot._cost(compiled)["flops"]  # per chip (the demo model is unscanned: XLA counts every layer)
    model, hardware = aot.model_flops_per_step(task.model_config, ROWS, SAMPLES)
    assert hardware == model  # the demo model is not rematerialised
    model /= 4
    assert 0.7 < flops / model < 2.5, (flops, model)
