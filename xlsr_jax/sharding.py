"""Logical axis names, the rule table that maps them onto the device mesh, and mesh creation.

Parameters and activations use separate logical names (as in MaxText) so that, e.g., the
`embed` dimension of a weight can be FSDP-sharded while the `act_embed` dimension of an
activation stays whole.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh

# Mesh axes.
DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)

# Parameter axes.
EMBED = "embed"  # model width
MLP = "mlp"  # feed-forward hidden width
HEADS = "heads"  # attention heads
KV = "kv"  # per-head width
CONV_IN = "conv_in"  # input channels of a convolution
CONV_OUT = "conv_out"  # output channels of a convolution
CONV_WIDTH = "conv_width"  # kernel width of a convolution
CODEVECTORS = "codevectors"  # groups x entries of the quantizer codebook
CODEVECTOR_DIM = "codevector_dim"  # width of one codebook entry
VOCAB = "vocab"  # output classes of a head (CTC characters, languages)
LAYERS = "layers"  # stacked Transformer layers under nn.scan
NORM = "norm"  # scale/bias of normalisation layers (small: always replicated)

# Activation axes.
ACT_BATCH = "act_batch"
ACT_SAMPLES = "act_samples"  # raw waveform samples
ACT_TIME = "act_time"  # feature frames
ACT_EMBED = "act_embed"
ACT_HEADS = "act_heads"
ACT_MLP = "act_mlp"

PARAM_AXES = (EMBED, MLP, HEADS, KV, CONV_IN, CONV_OUT, CONV_WIDTH, CODEVECTORS, CODEVECTOR_DIM, VOCAB, LAYERS, NORM)
ACTIVATION_AXES = (ACT_BATCH, ACT_SAMPLES, ACT_TIME, ACT_EMBED, ACT_HEADS, ACT_MLP)


def logical_axis_rules() -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
    """The rule table: logical axis name -> mesh axis (or axes, or None for replicated).

    Batch is split over `data` and `fsdp` (FSDP is data parallelism whose parameters are
    sharded too); weights are split over `fsdp` along their model width and over `tensor`
    along heads / feed-forward width (Megatron-style tensor parallelism).
    """
    return (
        (ACT_BATCH, (DATA, FSDP)),
        (ACT_SAMPLES, None),
        (ACT_TIME, None),
        (ACT_EMBED, None),
        (ACT_HEADS, TENSOR),
        (ACT_MLP, TENSOR),
        (EMBED, FSDP),
        (MLP, TENSOR),
        (HEADS, TENSOR),
        (KV, None),
        (CONV_IN, None),
        (CONV_OUT, FSDP),
        (CONV_WIDTH, None),
        (CODEVECTORS, None),
        (CODEVECTOR_DIM, FSDP),
        (VOCAB, None),
        (LAYERS, None),
        (NORM, None),
    )


def logical_axis_rules_with(overrides=None) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
    """The rule table with a config's `sharding.logical_axis_rules` overrides applied.

    `overrides`: (name, mesh axis or axes) pairs; a known name is replaced in place, a new name
    is appended. Used by the trainer and by the ahead-of-time compiler, so both shard alike.
    """
    rules = logical_axis_rules()
    if not overrides:
        return rules
    pending = {name: (tuple(ax) if isinstance(ax, (list, tuple)) else ax) for name, ax in overrides}
    return tuple((name, pending.pop(name, ax)) for name, ax in rules) + tuple(pending.items())


def create_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a (data, fsdp, tensor) mesh over all devices; one size may be -1 (the rest).

    Args:
      data, fsdp, tensor: mesh axis sizes; at most one of them -1, filled from the device count.
      devices: devices to use (default: all global devices, every host).
    Returns:
      A `jax.sharding.Mesh` with axis names `MESH_AXES`.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into mesh {sizes}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, have {len(devices)}")
    try:
        device_array = mesh_utils.create_device_mesh(sizes, devices=devices)
    except (AssertionError, ValueError, NotImplementedError):
        device_array = np.asarray(devices).reshape(sizes)
    return Mesh(device_array, MESH_AXES)


# ---------------------------------------------------------------------------------------------
# Batch placement and state-sharding derivation.
# ---------------------------------------------------------------------------------------------

# Mesh axes the batch dimension is split over (the rule for ACT_BATCH).
BATCH_MESH_AXES = (DATA, FSDP)


def batch_sharding(mesh: Mesh) -> jax.sharding.NamedSharding:
    """Sharding of a batch array: leading (batch) dim split over (data, fsdp), rest whole."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(BATCH_MESH_AXES))


def replicated(mesh: Mesh) -> jax.sharding.NamedSharding:
    """A fully replicated sharding on `mesh` (scalars, metrics, RNG keys)."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def batch_shards(mesh: Mesh) -> int:
    """How many ways the batch dimension is split: data x fsdp."""
    return int(mesh.shape[DATA] * mesh.shape[FSDP])


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places this process's slice of the global batch onto the mesh.

    Every process passes its own host-local arrays (leading dim = global batch / process
    count); the result is one global `jax.Array` per key whose batch dim is split over
    (data, fsdp). Works unchanged for 1 device, many local devices and many hosts.

    Args:
      batch: numpy arrays, each [local_batch, ...].
      mesh: the training mesh.
    Returns:
      Global arrays, each [local_batch * process_count, ...].
    """
    sharding = batch_sharding(mesh)
    local_devices = len(mesh.local_devices)
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.ndim == 0:
            raise ValueError(f"batch[{key!r}] is a scalar; every batch entry needs a batch dim")
        if value.shape[0] % local_devices:
            raise ValueError(
                f"batch[{key!r}] has local batch {value.shape[0]}, not divisible by the "
                f"{local_devices} local devices of the mesh"
            )
        global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


def _mesh_axis_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    if isinstance(axes, str):
        axes = (axes,)
    return int(np.prod([mesh.shape[a] for a in axes]))


def logical_to_sharding(
    logical_spec: jax.sharding.PartitionSpec, shape: Sequence[int], mesh: Mesh, rules=None
) -> jax.sharding.NamedSharding:
    """Maps one array's logical PartitionSpec to a NamedSharding, checking divisibility.

    A dim whose size the mapped mesh axes do not divide is left whole (replicated along
    those axes) instead of failing at jit time: tiny test models on an 8-device mesh hit
    this, real presets do not (`replicated_parameters` reports such cases).

    Args:
      logical_spec: PartitionSpec of logical axis names (None entries allowed).
      shape: the array's shape.
      mesh: target mesh.
      rules: logical axis rules (default `logical_axis_rules()`).
    Returns:
      A NamedSharding on `mesh`.
    """
    import flax.linen as nn  # local import: keep sharding.py importable without flax

    rules = logical_axis_rules() if rules is None else rules
    known = {name for name, _ in rules}
    for name in logical_spec:
        names = (name,) if isinstance(name, str) else (name or ())
        for n in names:
            if n not in known:
                raise KeyError(f"logical axis {n!r} has no rule in sharding.logical_axis_rules()")
    mesh_spec = nn.logical_to_mesh_axes(logical_spec, rules)
    fixed = []
    for dim, axes in zip(shape, tuple(mesh_spec) + (None,) * (len(shape) - len(mesh_spec))):
        fixed.append(axes if dim % _mesh_axis_size(mesh, axes) == 0 else None)
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*fixed))


def state_shardings(abstract_boxed_state, mesh: Mesh, rules=None):
    """Derives the shardings of a whole train state from its logical annotations.

    `abstract_boxed_state` comes from `jax.eval_shape` of an init function whose parameters
    (and therefore optimizer moments built by `tx.init` on them) are still boxed in
    `nn.LogicallyPartitioned`; unannotated leaves (step, RNG, counters) are replicated.

    Args:
      abstract_boxed_state: pytree of ShapeDtypeStruct, with logical boxes.
      mesh: target mesh.
      rules: logical axis rules (default `logical_axis_rules()`).
    Returns:
      A pytree of NamedSharding with the structure of the *unboxed* state.
    """
    import flax.linen as nn

    specs = nn.get_partition_spec(abstract_boxed_state)
    shapes = nn.unbox(abstract_boxed_state)
    return jax.tree.map(
        lambda spec, x: logical_to_sharding(spec, x.shape, mesh, rules),
        specs,
        shapes,
        is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec),
    )


def logical_axes_used(abstract_boxed_tree) -> set[str]:
    """All logical axis names that appear in a boxed (abstract) pytree's annotations."""
    import flax.linen as nn

    names: set[str] = set()
    specs = nn.get_partition_spec(abstract_boxed_tree)
    for spec in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)):
        for entry in spec:
            if isinstance(entry, str):
                names.add(entry)
            elif entry is not None:
                names.update(entry)
    return names


def replicated_parameters(params, shardings, min_size: int = 2**16, logical_specs=None) -> list[tuple[str, tuple]]:
    """Lists parameters of at least `min_size` elements that are fully replicated.

    FSDP only saves memory if the large tensors are actually split; a missing or
    non-dividing rule silently replicates them. Use this to check a preset on a mesh.

    Args:
      params: pytree of arrays or ShapeDtypeStruct.
      shardings: matching pytree of NamedSharding.
      min_size: element count from which a tensor counts as large.
      logical_specs: optional matching PartitionSpecs of logical names; a stacked `LAYERS`
        dim (nn.scan) is then left out of the size, so a per-layer bias stays small.
    Returns:
      (path, shape) of each large, fully replicated parameter.
    """
    found = []
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    flat_shardings = jax.tree.leaves(shardings)
    is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)
    flat_specs = jax.tree.leaves(logical_specs, is_leaf=is_spec) if logical_specs is not None else [None] * len(flat)
    for (path, leaf), sharding, spec in zip(flat, flat_shardings, flat_specs):
        size = int(np.prod(leaf.shape))
        if spec is not None and LAYERS in tuple(spec):
            size //= leaf.shape[tuple(spec).index(LAYERS)]
        if size >= min_size and sharding.is_fully_replicated:
            found.append((jax.tree_util.keystr(path), tuple(leaf.shape)))
    return found


def mesh_rules_context(mesh: Mesh, rules=None):
    """Context for tracing model code: the mesh and the logical rules are in scope, so the
    models' `nn.with_logical_constraint` activation annotations turn into sharding constraints
    (outside it they are no-ops).

    Args:
      mesh: the training mesh.
      rules: logical axis rules (default `logical_axis_rules()`).
    Returns:
      A context manager.
    """
    import contextlib

    import flax.linen as nn

    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(mesh))
    stack.enter_context(nn.logical_axis_rules(logical_axis_rules() if rules is None else rules))
    return stack
