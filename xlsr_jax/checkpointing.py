"""What is on disk: the checkpoint layout, the Orbax manager, resume-or-init and params-only loads.

This module owns every path decision about checkpoints. A training run's workdir holds

  RUN/config.json               the resolved run config
  RUN/checkpoints/<step>/       one directory per saved step, four Orbax items:
      params/                   the model parameters (sharded arrays; tensorstore/OCDBT)
      train_state/              everything else needed to resume exactly: optimizer state, step,
                                RNG, counters
      config/                   the resolved run config (JSON) with the trained `architecture`,
                                so a checkpoint explains itself
      data/                     the input pipeline position of every process (JSON)

and an exported model (`xlsr_jax.pretrained`, the converters) is

  DIR/model.json                architecture, model config, vocabulary, audio settings
  DIR/params/                   float32 parameters (Orbax)

`resolve(path)` says which of these a path is (a run, its checkpoints/ folder, a step, a params
folder, an export) and where its parameters and metadata are; every loader goes through it.
`restore_or_init` is the one place that decides how a run starts (its docstring lists the order).
Parameters are a separate item so fine-tuning can read them without touching the optimizer
state (`restore_params`). Restores always go against an abstract target carrying the *new*
shardings, so a checkpoint written on one mesh / device count loads onto any other.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from xlsr_jax import fileio

log = logging.getLogger(__name__)

# Run layout.
RUN_CONFIG = "config.json"  # RUN/config.json
CHECKPOINTS = "checkpoints"  # RUN/checkpoints/<step>/
# Items of a step directory.
PARAMS = "params"
TRAIN_STATE = "train_state"
CONFIG = "config"
DATA = "data"
# Export layout (`xlsr_jax.pretrained`): DIR/model.json + DIR/params/.
MODEL_JSON = "model.json"

# The model class each task trained, for checkpoints written before the run config recorded
# `architecture` (commit 3b8a2e9 and earlier, when only these three tasks existed).
LEGACY_TASK_ARCHITECTURES = {
    "pretrain": "Wav2Vec2ForPreTraining",
    "ctc": "Wav2Vec2ForCTC",
    "lid": "Wav2Vec2ForSequenceClassification",
}

EXPECTED = (
    "an exported model (model.json + params/), a training --workdir (with checkpoints/<step>/), "
    "its checkpoints/ folder, a step folder (<step>/params/) or a params/ folder"
)


class CheckpointNotFoundError(FileNotFoundError):
    """A path that is none of the layouts `resolve` accepts; the message is one line naming them."""


@dataclasses.dataclass(frozen=True)
class Resolved:
    """What `resolve` found.

    Attributes:
      path: the path as given.
      kind: "export", "run", "checkpoints", "step" or "params" (what `path` itself is).
      params_dir: the Orbax parameter directory to read (absolute for local paths).
      step_dir: the training step directory holding it (None for an export or a bare params dir).
      step: that step's number (None when not a training step).
      export_dir: the exported model's directory (None unless kind == "export").
    """

    path: str
    kind: str
    params_dir: str
    step_dir: str | None = None
    step: int | None = None
    export_dir: str | None = None

    @property
    def config_item(self) -> str | None:
        """The step's stored run config (None for exports and bare params folders)."""
        return fileio.join(self.step_dir, CONFIG, "metadata") if self.step_dir else None

    def describe(self) -> str:
        """One line saying what was loaded, e.g. "step 20 of runs/sw (runs/sw/checkpoints/20)"."""
        if self.kind == "export":
            return f"exported model {self.export_dir}"
        if self.kind in ("run", "checkpoints"):
            return f"step {self.step} (the newest) of {self.path} ({self.step_dir})"
        if self.kind == "step":
            return f"step {self.step} ({self.step_dir})"
        return f"parameters {self.params_dir}"


def _step_number(step_dir: str) -> int | None:
    name = os.path.basename(os.path.normpath(step_dir))
    return int(name) if name.isdigit() else None


def finished_steps(checkpoints_dir: str) -> list[int]:
    """Steps under a checkpoints/ folder that hold parameters, ascending (unfinished saves have
    non-numeric temporary names and are ignored)."""
    if not fileio.isdir(checkpoints_dir):
        return []
    return sorted(
        int(name)
        for name in fileio.listdir(checkpoints_dir)
        if name.isdigit() and fileio.isdir(fileio.join(checkpoints_dir, name, PARAMS))
    )


def resolve(path: str | os.PathLike) -> Resolved:
    """Says what `path` is and where its parameters are, picking the newest step of a run.

    Accepted (local or gs://), checked in this order:
      1. an export: `path/model.json` (or `path` is an export's params/ folder);
      2. a step folder: `path/params/` (or `path` is a step's params/ folder);
      3. a checkpoints/ folder: numbered step folders under `path` -> the newest;
      4. a training workdir: `path/checkpoints/` -> its newest step;
      5. a bare params/ folder (Orbax tree, no metadata beside it).

    Raises:
      CheckpointNotFoundError: `path` does not exist, is none of these, or is a run without a
        finished checkpoint yet; the message is one line naming what was expected.
    """
    path = os.fspath(path)
    norm = path.rstrip("/") or path
    if not fileio.isdir(norm):
        raise CheckpointNotFoundError(f"{path}: no such directory; expected {EXPECTED}")
    if fileio.isfile(fileio.join(norm, MODEL_JSON)):
        return Resolved(path, "export", fileio.abspath(fileio.join(norm, PARAMS)), export_dir=fileio.abspath(norm))
    if os.path.basename(norm) == PARAMS:
        parent = os.path.dirname(norm) or "."
        if fileio.isfile(fileio.join(parent, MODEL_JSON)):
            return Resolved(path, "export", fileio.abspath(norm), export_dir=fileio.abspath(parent))
        if fileio.isdir(fileio.join(parent, CONFIG)):
            return Resolved(path, "step", fileio.abspath(norm), fileio.abspath(parent), _step_number(parent))
        return Resolved(path, "params", fileio.abspath(norm))
    if fileio.isdir(fileio.join(norm, PARAMS)):
        step_dir = fileio.abspath(norm)
        return Resolved(path, "step", fileio.join(step_dir, PARAMS), step_dir, _step_number(norm))
    for kind, root in (("checkpoints", norm), ("run", fileio.join(norm, CHECKPOINTS))):
        steps = finished_steps(root)
        if steps:
            step_dir = fileio.abspath(fileio.join(root, str(steps[-1])))
            return Resolved(path, kind, fileio.join(step_dir, PARAMS), step_dir, steps[-1])
    if fileio.isdir(fileio.join(norm, CHECKPOINTS)) or fileio.isfile(fileio.join(norm, RUN_CONFIG)):
        raise CheckpointNotFoundError(
            f"{path}: a training run without a finished checkpoint yet (nothing under "
            f"{fileio.join(norm, CHECKPOINTS)}/<step>/{PARAMS}); expected {EXPECTED}"
        )
    raise CheckpointNotFoundError(f"{path}: not a checkpoint; expected {EXPECTED}")


def strip_boxes(tree: Any) -> Any:
    """Collapses {"value": leaf} nodes (flax Partitioned boxes saved as pytrees) to the leaf."""
    if isinstance(tree, Mapping):
        if set(tree) == {"value"} and not isinstance(tree["value"], Mapping):
            return tree["value"]
        return {k: strip_boxes(v) for k, v in tree.items()}
    return tree


def params_metadata(path: str) -> dict:
    """Nested dict of leaf metadata (each with `.shape`, `.dtype`) of the parameters at `path`.

    Args:
      path: anything `resolve` accepts.
    """
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(resolve(path).params_dir)
    tree = getattr(meta, "item_metadata", meta)
    return getattr(tree, "tree", tree)


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


def restore_params(path: str, abstract_params: Any, *, partial: bool = True) -> Any:
    """Loads only the parameters of a checkpoint (initialising a fine-tuning run from pretraining).

    Args:
      path: anything `resolve` accepts (a run's newest step is used).
      abstract_params: pytree of `jax.ShapeDtypeStruct` with target shardings. With `partial`,
        it may be a subtree of what was saved (e.g. only the encoder of a pretraining model).
      partial: allow the checkpoint to hold more parameters than requested.
    Returns:
      The parameter pytree, sharded as `abstract_params` asks.
    """
    params_dir = resolve(path).params_dir
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_params)
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(
            params_dir,
            args=ocp.args.PyTreeRestore(item=abstract_params, restore_args=restore_args, partial_restore=partial),
        )


def read_config(path: str, step: int | None = None) -> dict[str, Any]:
    """Reads the resolved run config stored with a training checkpoint.

    Args:
      path: a run, its checkpoints/ folder, a step or a step's params folder (`resolve`).
      step: read this step of a run / checkpoints folder instead of the newest.
    Raises:
      CheckpointNotFoundError: `path` is no training checkpoint (or has no such step).
    """
    found = resolve(path)
    if step is not None and found.kind in ("run", "checkpoints"):
        found = resolve(fileio.join(os.path.dirname(found.step_dir), str(step)))
    if found.config_item is None or not fileio.isfile(found.config_item):
        raise CheckpointNotFoundError(f"{path}: not a training checkpoint with a stored run config ({found.kind})")
    return json.loads(fileio.read_text(found.config_item))


def run_architecture(run_config: Mapping[str, Any], where: str = "checkpoint") -> str:
    """The model class a training run trained: its recorded `architecture`, else (runs written
    before it was recorded) the one its task trained then (`LEGACY_TASK_ARCHITECTURES`).

    Raises:
      ValueError: neither is known.
    """
    arch = run_config.get("architecture") or LEGACY_TASK_ARCHITECTURES.get(run_config.get("task", ""))
    if not arch:
        raise ValueError(
            f"{where}: run config records no architecture and its task {run_config.get('task')!r} is unknown"
        )
    return arch


def read_params_numpy(path: str) -> Any:
    """Reads a checkpoint's parameters onto the host as numpy arrays, no target needed.

    For inspection, export and tests; training restores go through `restore_params` /
    `CheckpointManager.restore`, which place arrays directly on the mesh.

    Args:
      path: anything `resolve` accepts (a run's newest step).
    Returns:
      The parameter pytree (nested dicts) of numpy arrays.
    """
    params_dir = resolve(path).params_dir
    with ocp.PyTreeCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(params_dir).item_metadata.tree
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
        return checkpointer.restore(params_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))


@dataclasses.dataclass
class Start:
    """How a run starts (`restore_or_init`).

    Attributes:
      params, rest: the parameters and the rest of the train state (as `init` returns them).
      origin: "resumed", "initialised" (params from a checkpoint) or "fresh".
      step: the checkpoint step resumed from (None otherwise).
      saved_config: the run config stored with that checkpoint (None otherwise).
      data_state: this process's input position to restore (None: start the stream afresh).
    """

    params: Any
    rest: Any
    origin: str
    step: int | None = None
    saved_config: dict[str, Any] | None = None
    data_state: Any = None


def restore_or_init(
    manager: CheckpointManager,
    abstract_params: Any,
    abstract_rest: Any,
    *,
    init: Callable[[], tuple[Any, Any]],
    init_checkpoint: str = "",
    load_init_params: Callable[[str, Any, Any], Any] | None = None,
) -> Start:
    """Decides how a run starts, in this order (the first that applies wins):

      1. Resume: the run's own newest finished checkpoint (`manager`'s directory): parameters,
         optimizer state, step, RNG and every process's input position, placed on the current
         mesh (which may differ from the one that wrote it).
      2. Initialise from `init_checkpoint` (config.init.checkpoint; anything `resolve` accepts):
         a fresh state from `init()`, then its parameters replaced by `load_init_params(path,
         abstract_params, fresh_params)` (the task decides which parts: fine-tuning keeps new
         heads); the step, optimizer and input position start from zero.
      3. Fresh: `init()` (parameters from the seed).

    Args:
      manager: the run's checkpoint manager.
      abstract_params, abstract_rest: ShapeDtypeStruct trees with the run's shardings.
      init: builds a fresh (params, rest) on the mesh.
      init_checkpoint: "" for none.
      load_init_params: `(path, abstract_params, fresh_params) -> params`; default `restore_params`.
    Returns:
      `Start`.
    """
    latest = manager.latest_step()
    if latest is not None:
        params, rest, saved_config, data_state = manager.restore(latest, abstract_params, abstract_rest)
        log.info("resumed from checkpoint step %d", latest)
        return Start(params, rest, "resumed", latest, saved_config, data_state)
    params, rest = init()
    if init_checkpoint:
        if load_init_params is None:
            params = restore_params(init_checkpoint, abstract_params, partial=True)
        else:
            params = load_init_params(init_checkpoint, abstract_params, params)
        log.info("initialised parameters from %s", resolve(init_checkpoint).describe())
        return Start(params, rest, "initialised")
    return Start(params, rest, "fresh")
