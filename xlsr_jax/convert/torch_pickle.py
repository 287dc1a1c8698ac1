"""Loading untrusted PyTorch checkpoints (`.pt`, `pytorch_model.bin`) without running their code.

A `.pt` file is a pickle, and unpickling can call any importable function. We load with
`torch.load(weights_only=True)`, whose unpickler only builds tensors, containers and the
globals on an allowlist. fairseq checkpoints also carry their training config and bookkeeping as
pickled objects, so the allowlist is extended with exactly what those need:

* `argparse.Namespace` (old checkpoints' `args`): a plain attribute bag, safe to build for real;
* inert builtin types (`builtins.dict`, `int`, `list`, ...): omegaconf 2.0's `DictConfig`, which
  hydra-era fairseq (>= 0.10) pickles as `cfg`, records node types by reference (`object_type`)
  and rebuilds its containers with them. Calling one builds a plain value and runs nothing else;
  callables that act (`eval`, `exec`, `getattr`, `__import__`, `open`, `type`, ...) stay refused;
* globals from the `fairseq.*`, `omegaconf.*` and `numpy.*` modules (hydra configs, enum choices,
  meters in `extra_state`, numpy scalars): mapped to `Opaque`, an inert stand-in that records
  its constructor arguments and pickled state and runs nothing. Configs are read back out of
  those records by `to_plain`. Neither fairseq nor omegaconf need be installed.

Any other global (e.g. `builtins.eval`, `builtins.exec`, `os.system`, `subprocess.Popen`, a user
class) is refused, naming it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

# Module prefixes whose globals are replaced by inert `Opaque` records.
OPAQUE_MODULE_PREFIXES = ("fairseq.", "omegaconf.", "numpy.", "typing.", "enum.")
# Globals that are replaced by a function building a plain dict (their items follow via SETITEMS,
# which torch's unpickler only allows on exact dicts).
DICT_LIKE_GLOBALS = ("collections.defaultdict",)
# Builtin types that are inert to reference or call (value constructors; no attribute access,
# import, I/O or code). Python 2 pickles (protocol <= 2, torch.save's default) name them
# `__builtin__.*`; torch's unpickler reports them as `builtins.*`.
INERT_BUILTIN_TYPES = {
    t.__name__: t for t in (dict, list, tuple, set, frozenset, int, float, complex, bool, str, bytes, bytearray, slice)
}


class UnsafeCheckpointError(ValueError):
    """The checkpoint pickles a global outside the allowlist."""


class Opaque:
    """Inert record standing in for a pickled object of a non-allowlisted-but-expected class."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"Opaque({self.qualname}, args={self.args!r}, state={self.state!r})"


def _opaque_class(full_name: str) -> type:
    return type("Opaque_" + full_name.replace(".", "_"), (Opaque,), {"qualname": full_name})


def _make_dict(*args, **kwargs) -> dict:
    return {}


def _allowlist(names: list[str]) -> tuple[list, list[str]]:
    allowed, refused = [], []
    for name in names:
        if name == "argparse.Namespace":
            allowed.append((argparse.Namespace, name))
        elif name.startswith(("builtins.", "__builtin__.")) and name.split(".", 1)[1] in INERT_BUILTIN_TYPES:
            allowed.append((INERT_BUILTIN_TYPES[name.split(".", 1)[1]], name))
        elif name in DICT_LIKE_GLOBALS:
            allowed.append((_make_dict, name))
        elif name.startswith(OPAQUE_MODULE_PREFIXES):
            allowed.append((_opaque_class(name), name))
        else:
            refused.append(name)
    return allowed, refused


def load_torch_file(path: str | os.PathLike) -> Any:
    """Loads a torch-saved object safely (tensors stay torch tensors on CPU).

    Raises:
      ImportError with install instructions when torch is absent.
      UnsafeCheckpointError naming the globals outside the allowlist.
    """
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading .pt/.bin checkpoints needs PyTorch: pip install -e '.[torch]'") from e
    from pickle import UnpicklingError

    path = os.fspath(path)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file, not a PyTorch checkpoint")
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except ValueError:
        names = []  # legacy (non-zip) format: discovered one at a time below
    except (RuntimeError, OSError, EOFError) as e:
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint (truncated or not a torch.save file: {e})"
        ) from None
    allowed, refused = _allowlist(names)
    if refused:
        raise UnsafeCheckpointError(
            f"{path}: refusing to load; it pickles globals outside the allowlist: {refused}. Only "
            "tensors, containers, builtin value types, argparse.Namespace and fairseq/omegaconf config "
            "records are accepted."
        )
    for _ in range(64):
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError) as e:  # torch's zip reader on a damaged archive
            raise ValueError(f"{path}: not a readable PyTorch checkpoint (truncated or damaged: {e})") from None
        except UnpicklingError as e:
            name = _global_from_error(str(e))
            if name is None:
                # torch's message is a page of advice; the cause is the WeightsUnpickler line.
                cause = str(e).split("WeightsUnpickler error:", 1)[-1].split("Check the documentation")[0]
                cause = " ".join(cause.split()) or "unreadable pickle"
                raise UnsafeCheckpointError(f"{path}: refusing to load: {cause}") from None
            more, refused = _allowlist([name])
            if refused:
                raise UnsafeCheckpointError(
                    f"{path}: refusing to load; it pickles a global outside the allowlist: {name}"
                ) from None
            allowed += more
    raise UnsafeCheckpointError(f"{path}: too many distinct globals")


def _global_from_error(msg: str) -> str | None:
    marker = "GLOBAL "
    if marker not in msg:
        return None
    return msg.split(marker, 1)[1].split(" ", 1)[0]


def to_plain(obj: Any) -> Any:
    """Turns loaded config objects into plain Python: dicts, lists, scalars.

    Namespaces become dicts; omegaconf DictConfig/ListConfig records become dicts/lists of their
    node values (omegaconf keeps a container's items in `_content` and a leaf's in `_val`);
    enum records become their value.
    """
    if isinstance(obj, argparse.Namespace):
        return {k: to_plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    if isinstance(obj, Opaque):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]  # (dict state, slot state)
        if isinstance(state, dict):
            if "_content" in state:
                content = state["_content"]
                if content is None or isinstance(content, str):
                    return None  # omegaconf None / "???" (missing) / interpolation
                return to_plain(content)
            if "_val" in state:
                return to_plain(state["_val"])
            if "_value_" in state:
                return to_plain(state["_value_"])
        if obj.args and len(obj.args) == 1 and state is None:
            return to_plain(obj.args[0])  # enums pickle as Class(value)
        return obj
    return obj
