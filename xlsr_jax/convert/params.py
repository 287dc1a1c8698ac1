"""HF state dict (numpy) <-> our Flax parameter tree, driven by `tables.hf_param_table`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from xlsr_jax.convert import tables
from xlsr_jax.models.config import Wav2Vec2Config


class CheckpointMismatchError(ValueError):
    """Keys or shapes of a checkpoint do not match what its config describes."""


def _fmt(items, limit=20) -> str:
    items = sorted(items)
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def normalize_hf_keys(state: Mapping[str, np.ndarray], architecture: str) -> dict[str, np.ndarray]:
    """Renames legacy HF keys (weight_g/weight_v) and adds/strips the `wav2vec2.` prefix.

    A bare `Wav2Vec2Model` checkpoint has no prefix; loading it as a model with a head (or the
    reverse) is allowed for the encoder weights, as transformers' base_model_prefix logic does.
    """
    out = {}
    for key, value in state.items():
        key = tables.rename_by_table(key, tables.HF_LEGACY_RENAMES) or key
        out[key] = value
    has_prefix = any(k.startswith("wav2vec2.") for k in out)
    if architecture == "Wav2Vec2Model" and has_prefix:
        out = {k[len("wav2vec2.") :]: v for k, v in out.items() if k.startswith("wav2vec2.")}
    elif architecture != "Wav2Vec2Model" and not has_prefix:
        heads = ("quantizer.", "project_hid.", "project_q.", "lm_head.", "projector.", "classifier.", "layer_weights")
        out = {(k if k.startswith(heads) else "wav2vec2." + k): v for k, v in out.items()}
    return out


def check_layer_counts(state: Mapping[str, Any], config: Wav2Vec2Config) -> None:
    """Compares the numbers of Transformer and conv layers the config declares with those the
    weights hold, from the key names alone: before a parameter table or any array is built
    from the config (a declared num_hidden_layers of 10 million would otherwise take minutes
    and gigabytes before the mismatch shows).

    Raises:
      CheckpointMismatchError naming the config field and both counts.
    """
    for field, declared, pattern in (
        ("num_hidden_layers", config.num_hidden_layers, r"(?:^|\.)encoder\.layers\.(\d+)\."),
        ("conv_dim", len(config.conv_dim), r"(?:^|\.)feature_extractor\.conv_layers\.(\d+)\."),
    ):
        found = {int(m.group(1)) for k in state for m in [re.search(pattern, k)] if m}
        # Only more declared than held needs the early answer (the table would grow with the
        # config); extra or missing indices below are listed key by key by the full comparison.
        if found and declared > max(found) + 1:
            held = f"{len(found)} (indices {min(found)}..{max(found)})"
            raise CheckpointMismatchError(
                f"the config declares {declared} {'Transformer' if field == 'num_hidden_layers' else 'conv'} "
                f"layers ({field}) but the weights hold {held}"
            )


def hf_state_to_params(
    state: Mapping[str, np.ndarray],
    config: Wav2Vec2Config,
    architecture: str,
    *,
    allow_missing: tuple[str, ...] = (),
    ignore_unexpected: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Converts a HF Wav2Vec2 state dict to our nested parameter dict (float32 numpy).

    Args:
      state: HF key -> array (any float dtype; torch tensors must be converted to numpy first).
      config: our config the checkpoint was made with.
      architecture: HF class name (see `xlsr_jax.models.ARCHITECTURES`).
      allow_missing: regexes of HF keys that may be absent; such parameters are zero-filled.
        (Used for `masked_spec_embed`, which HF drops when masking is off.)
      ignore_unexpected: regexes of HF keys to drop silently (e.g. a pretraining head when
        converting only the encoder).

    Raises:
      CheckpointMismatchError naming every missing, unexpected and mis-shaped key.
    """
    state = normalize_hf_keys(state, architecture)
    check_layer_counts(state, config)
    rules = tables.hf_param_table(config, architecture)
    layers = config.num_hidden_layers if config.scan_layers else None
    return state_to_params_by_rules(
        state, rules, architecture, layers, allow_missing=allow_missing, ignore_unexpected=ignore_unexpected
    )


def state_to_params_by_rules(
    state: Mapping[str, np.ndarray],
    rules: list[tables.ParamRule],
    what: str,
    scanned_layers: int | None = None,
    *,
    allow_missing: tuple[str, ...] = (),
    ignore_unexpected: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A HF state dict -> our nested parameter dict, as `rules` say (see `hf_state_to_params`).

    `scanned_layers`: the layer count when rules with a `layer` index are stacked on a leading
    axis (scanned layers), else None. `what` names the model in the error message.
    """
    expected = {r.hf for r in rules}
    missing = [k for k in expected - set(state) if not any(re.fullmatch(p, k) for p in allow_missing)]
    unexpected = [k for k in set(state) - expected if not any(re.fullmatch(p, k) for p in ignore_unexpected)]
    bad_shape = [
        f"{r.hf}: checkpoint {tuple(np.shape(state[r.hf]))} vs config {r.hf_shape}"
        for r in rules
        if r.hf in state and tuple(np.shape(state[r.hf])) != r.hf_shape
    ]
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
        if bad_shape:
            parts.append(f"shape mismatches ({len(bad_shape)}): {_fmt(bad_shape)}")
        raise CheckpointMismatchError(
            f"checkpoint does not match the {what} described by its config: " + "; ".join(parts)
        )

    params: dict[str, Any] = {}
    stacked: dict[tuple[str, ...], list] = {}
    for r in rules:
        if r.hf in state:
            value = r.transform.to_ours(np.asarray(state[r.hf], dtype=np.float32))
        else:
            value = np.zeros(r.ours_shape, np.float32)
        if scanned_layers is not None and r.layer is not None:
            stacked.setdefault(r.ours, [None] * scanned_layers)[r.layer] = value
        else:
            _set(params, r.ours, np.ascontiguousarray(value))
    for path, values in stacked.items():
        _set(params, path, np.stack(values, axis=0))
    return params


def params_to_hf_state(params: Mapping[str, Any], config: Wav2Vec2Config, architecture: str) -> dict[str, np.ndarray]:
    """Converts our parameter tree to a HF state dict (float32 numpy, contiguous).

    Raises:
      CheckpointMismatchError naming our parameters that are missing, unused or mis-shaped.
      Our `masked_spec_embed` is dropped when the config has masking off, since HF's model has
      no such parameter then.
    """
    rules = tables.hf_param_table(config, architecture)
    optional = {("masked_spec_embed",), ("wav2vec2", "masked_spec_embed")}
    layers = config.num_hidden_layers if config.scan_layers else None
    return params_to_state_by_rules(params, rules, architecture, layers, optional=optional)


def params_to_state_by_rules(
    params: Mapping[str, Any],
    rules: list[tables.ParamRule],
    what: str,
    scanned_layers: int | None = None,
    *,
    optional: set[tuple[str, ...]] = frozenset(),
) -> dict[str, np.ndarray]:
    """Our parameter tree -> a HF state dict, as `rules` say (see `params_to_hf_state`).

    `optional`: our parameter paths that may exist without a HF counterpart (dropped).
    """
    flat = flatten(params)
    used = {r.ours for r in rules}
    missing = ["/".join(p) for p in used - set(flat)]
    unused = ["/".join(p) for p in set(flat) - used - set(optional)]
    bad_shape = []
    for r in rules:
        if r.ours in flat:
            stacked = scanned_layers is not None and r.layer is not None
            want = ((scanned_layers,) + r.ours_shape) if stacked else r.ours_shape
            got = tuple(np.shape(flat[r.ours]))
            if got != want:
                bad_shape.append(f"{'/'.join(r.ours)}: params {got} vs config {want}")
    if missing or unused or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing parameters ({len(missing)}): {_fmt(missing)}")
        if unused:
            parts.append(f"parameters with no HF counterpart ({len(unused)}): {_fmt(unused)}")
        if bad_shape:
            parts.append(f"shape mismatches ({len(bad_shape)}): {_fmt(bad_shape)}")
        raise CheckpointMismatchError(
            f"parameters do not match the {what} described by the config: " + "; ".join(parts)
        )
    state = {}
    for r in rules:
        value = np.asarray(flat[r.ours], dtype=np.float32)
        if scanned_layers is not None and r.layer is not None:
            value = value[r.layer]
        state[r.hf] = np.ascontiguousarray(r.transform.to_hf(value))
    return state


def flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested dict -> {path tuple: leaf}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value
