"""Orbax checkpoints: periodic async saves, resume against an abstract sharded state, params-only load.

A checkpoint step directory holds four items:

  params/       the model parameters (sharded arrays; tensorstore/OCDBT)
  train_state/  everything else needed to resume exactly: optimizer state, step, RNG, counters
  config/       the resolved run config (JSON), so a checkpoint explains itself
  data/         the input pipeline position of every process (JSON list, one entry per process)

Parameters are a separate item so fine-tuning can read them without touching the optimizer
state (`restore_params`). Restores always go against an abstract target carrying the *new*
shardings, so a checkpoint written on one mesh / device count loads onto any other.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from xlsr_jax import fileio

log = logging.getLogger(__name__)

PARAMS = "params"
TRAIN_STATE = "train_state"
CONFIG = "config"
DATA = "data"
ITEM_NAMES = (PARAMS, TRAIN_STATE, CONFIG, DATA)


def gather_json_across_processes(obj: Any) -> list[Any]:
    """Collects one JSON-able object from every process, in process order, on every process.

    The data pipeline position is per process (each reads its own shard), but Orbax's JSON
    items are written by the primary process only, so the positions are gathered first.
    Must be called by all processes (it is a collective).

    Args:
      obj: a JSON-serialisable object (this process's value).
    Returns:
      A list of `jax.process_count()` objects; entry i is process i's value.
    """
    if jax.process_count() == 1:
        return [json.loads(json.dumps(obj))]
    encoded = np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([encoded.size], np.int32)))
    lengths = lengths.reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: encoded.size] = encoded
    gathered = np.asarray(multihost_utils.process_allgather(padded))  # [processes, max_len]
    return [json.loads(gathered[i, : lengths[i]].tobytes().decode("utf-8")) for i in range(gathered.shape[0])]


class CheckpointManager:
    """Periodic, asynchronous, keep-last-N checkpoints of a training run.

    All processes construct it and call `save` / `restore` together (Orbax coordinates the
    multi-host writes; JSON items are written by the primary process).
    """

    def __init__(self, directory: str, *, save_every_steps: int, keep: int, async_save: bool = True):
        """Opens (creating if needed) the checkpoint directory.

        Args:
          directory: where step directories live (local path or gs://...).
          save_every_steps: `save` without `force` only writes on multiples of this.
          keep: number of most recent checkpoints kept (older ones are deleted).
          async_save: write in a background thread while training continues.
        """
        self.directory = os.fspath(directory)
        if save_every_steps < 1:
            raise ValueError(f"save_every_steps must be >= 1, got {save_every_steps}")
        self.save_every_steps = save_every_steps
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                PARAMS: ocp.StandardCheckpointHandler(),
                TRAIN_STATE: ocp.StandardCheckpointHandler(),
                CONFIG: ocp.JsonCheckpointHandler(),
                DATA: ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        """The newest finished checkpoint's step, or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of all finished checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        """Whether `save(step)` without `force` would write (same answer on every process).

        Only multiples of `save_every_steps` (Orbax's own policy would also save the first
        step of a run, which costs a full write for nothing).
        """
        return step > 0 and step % self.save_every_steps == 0 and step not in self._manager.all_steps()

    def reached_preemption(self, step: int) -> bool:
        """True on every process once any of them has been told to stop (multi-host TPU/GPU).

        Uses JAX's preemption sync service, which exists only after `jax.distributed.initialize`;
        single-process runs use a SIGTERM handler in the trainer instead.
        """
        return bool(self._manager.reached_preemption(step))

    def save(
        self,
        step: int,
        params: Any,
        train_state: Any,
        *,
        config: dict[str, Any],
        data_state: Any,
        force: bool = False,
    ) -> bool:
        """Saves one checkpoint (asynchronously when enabled). Collective: call on all processes.

        Args:
          step: the step number naming the checkpoint.
          params: parameter pytree (global jax.Arrays).
          train_state: the rest of the training state (optimizer state, step, RNG, counters).
          config: the resolved config as a JSON-able dict.
          data_state: this process's input-pipeline position (JSON-able); gathered from all.
          force: save even if `step` is not a multiple of `save_every_steps`.
        Returns:
          Whether a checkpoint was started.
        """
        if not force and not self.should_save(step):
            return False
        data_states = gather_json_across_processes(data_state)
        saved = self._manager.save(
            step,
            args=ocp.args.Composite(
                **{
                    PARAMS: ocp.args.StandardSave(params),
                    TRAIN_STATE: ocp.args.StandardSave(train_state),
                    CONFIG: ocp.args.JsonSave(config),
                    DATA: ocp.args.JsonSave({"process_count": len(data_states), "states": data_states}),
                }
            ),
            force=True,  # the decision was made above; Orbax's policy is not consulted
        )
        return bool(saved)

    def restore(self, step: int, abstract_params: Any, abstract_train_state: Any):
        """Restores a checkpoint onto the shardings given by the abstract targets.

        Args:
          step: which checkpoint.
          abstract_params, abstract_train_state: pytrees of `jax.ShapeDtypeStruct` with the
            *current* run's shardings (any mesh / device count).
        Returns:
          (params, train_state, config dict, data_state of this process or None when the
          checkpoint was written by a different number of processes).
        """
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                **{
                    PARAMS: ocp.args.StandardRestore(abstract_params),
                    TRAIN_STATE: ocp.args.StandardRestore(abstract_train_state),
                    CONFIG: ocp.args.JsonRestore(),
                    DATA: ocp.args.JsonRestore(),
                }
            ),
        )
        data = restored[DATA]
        data_state = None
        if data["process_count"] == jax.process_count():
            data_state = data["states"][jax.process_index()]
        else:
            log.warning(
                "checkpoint %d was written by %d processes, this run has %d: the input "
                "pipeline positions cannot be mapped and the data stream restarts",
                step,
                data["process_count"],
                jax.process_count(),
            )
        return restored[PARAMS], restored[TRAIN_STATE], restored[CONFIG], data_state

    def wait(self) -> None:
        """Blocks until any in-flight asynchronous save has finished and been committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()


def _resolve_step_dir(path: str) -> str:
    """Accepts a run's checkpoint root, a step directory, or a step's params directory."""
    path = os.fspath(path)
    if os.path.basename(os.path.normpath(path)) == PARAMS:
        return path
    if fileio.isdir(os.path.join(path, PARAMS)):
        return os.path.join(path, PARAMS)
    steps = [
        int(name)
        for name in (fileio.listdir(path) if fileio.isdir(path) else [])
        if name.isdigit() and fileio.isdir(os.path.join(path, name, PARAMS))
    ]
    if not steps:
        raise FileNotFoundError(
            f"no checkpoint under {path!r}: expected <root>/<step>/{PARAMS} (a run's checkpoint "
            f"directory), <step dir>/{PARAMS}, or a {PARAMS} directory"
        )
    return os.path.join(path, str(max(steps)), PARAMS)


def restore_params(path: str, abstract_params: Any, *, partial: bool = True) -> Any:
    """Loads only the parameters of a checkpoint (initialising a fine-tuning run from pretraining).

    Args:
      path: a run's checkpoint root (newest step is used), a step directory, or its params dir.
      abstract_params: pytree of `jax.ShapeDtypeStruct` with target shardings. With `partial`,
        it may be a subtree of what was saved (e.g. only the encoder of a pretraining model).
      partial: allow the checkpoint to hold more parameters than requested.
    Returns:
      The parameter pytree, sharded as `abstract_params` asks.
    """
    params_dir = fileio.abspath(_resolve_step_dir(path))
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_params)
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(
            params_dir,
            args=ocp.args.PyTreeRestore(item=abstract_params, restore_args=restore_args, partial_restore=partial),
        )


def read_config(path: str, step: int | None = None) -> dict[str, Any]:
    """Reads the resolved config stored with a checkpoint (newest step by default)."""
    params_dir = _resolve_step_dir(path if step is None else os.path.join(path, str(step)))
    return json.loads(fileio.read_text(os.path.join(os.path.dirname(params_dir), CONFIG, "metadata")))


def read_params_numpy(path: str) -> Any:
    """Reads a checkpoint's parameters onto the host as numpy arrays, no target needed.

    For inspection, export and tests; training restores go through `restore_params` /
    `CheckpointManager.restore`, which place arrays directly on the mesh.

    Args:
      path: a run's checkpoint root (newest step), a step directory, or its params directory.
    Returns:
      The parameter pytree (nested dicts) of numpy arrays.
    """
    params_dir = fileio.abspath(_resolve_step_dir(path))
    with ocp.PyTreeCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(params_dir).item_metadata.tree
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
        return checkpointer.restore(params_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
