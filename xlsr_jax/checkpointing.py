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

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import time
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


# Orbax writes a step into `<step>.orbax-checkpoint-tmp-<n>` and renames it when complete.
TMP_MARKER = ".orbax-checkpoint-tmp"


def _save_error_line(directory: str, step: int | None, error: BaseException) -> str:
    """ "checkpoint step 20 could not be written under DIR: [Errno 28] No space left on device
    (ENOSPC) writing FILE; ..." from an OSError or TensorStore's error text
    ("... Failed writing: "FILE": ... [os_error_code='28']")."""
    code, where, text = None, None, ""
    e: BaseException | None = error
    while e is not None:
        if isinstance(e, OSError) and e.errno is not None:
            code, where = e.errno, e.filename
            break
        text += "\n" + str(e)
        e = e.__cause__ or e.__context__
    if code is None:
        found = re.search(r"os_error_code='?(\d+)", text)
        code = int(found.group(1)) if found else None
        paths = re.findall(r'(?:Failed writing|local file|file):? "([^"]+)"', text)
        where = paths[-1] if paths else None
    what = f"checkpoint step {step}" if step is not None else "the last checkpoint"
    if code is not None:
        reason = f"[Errno {code}] {os.strerror(code)} ({errno.errorcode.get(code, '?')})"
    else:
        reason = describe_error(error)
    detail = f" writing {where}" if where and where != directory else ""
    return f"{what} could not be written under {directory}: {reason}{detail}; the newest finished checkpoint is kept"


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

    def load(found: Resolved) -> Any:
        with ocp.StandardCheckpointer() as ckptr:
            meta = ckptr.metadata(found.params_dir)
        tree = getattr(meta, "item_metadata", meta)
        return getattr(tree, "tree", tree)

    return load_newest_readable(path, load)


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
        self._pending_step: int | None = None  # the newest step handed to Orbax
        self._in_flight = False  # whether its write may still be running in the background
        self._failed = False  # a save failed: its temporary folder is removed again on close
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
            # Unfinished step folders of a killed or failed run are removed when a run opens
            # the directory (they are never checkpoints: see `_remove_temporary`). Local only:
            # on gs:// Orbax lists them through its own GCS client, and unfinished steps there
            # are ignored anyway (no commit marker).
            cleanup_tmp_directories=not fileio.is_remote(self.directory),
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

    def reload(self) -> None:
        """Re-reads which steps exist (after a damaged step was set aside)."""
        self._manager.reload()

    def item_metadata(self, step: int) -> dict[str, Any]:
        """{item: metadata tree} of a step (leaves with `.shape`/`.dtype` for params and
        train_state), read through the manager (also where the directory is redirected)."""
        found = self._manager.item_metadata(step)
        return {name: getattr(found[name], "tree", found[name]) for name in (PARAMS, TRAIN_STATE)}

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
        # The previous asynchronous save must have succeeded (Orbax waits for it inside `save`
        # anyway; waiting here names the step whose write failed).
        with self._save_errors(self._pending_step):
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        self._pending_step = step  # names the step if its background write fails
        self._in_flight = True
        try:
            check_writable(self.directory)  # an unwritable folder fails here, before Orbax's threads start
        except CheckpointSaveError as e:
            raise CheckpointSaveError(
                f"checkpoint step {step} could not be written: {e}; the newest finished checkpoint is kept"
            ) from e
        with self._save_errors(step):
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

    @contextlib.contextmanager
    def _save_errors(self, step: int | None):
        """Turns a failed write into one `CheckpointSaveError` line (path and OS error) and removes
        the failed step's temporary folder, so a later run finds only finished steps."""
        try:
            yield
        except CheckpointSaveError:
            raise
        except Exception as e:
            self._failed = True
            self._remove_temporary()
            raise CheckpointSaveError(_save_error_line(self.directory, step, e)) from e

    def _remove_temporary(self, attempts: int = 1) -> None:
        """Deletes unfinished Orbax step folders (`<step>.orbax-checkpoint-tmp*`): partial writes,
        never checkpoints (a finished step has a plain number as its name). With `attempts` > 1
        it tries again (0.2 s apart) while one remains: Orbax's other writer threads of a failed
        save may still be adding files to it."""
        if jax.process_index() != 0 or fileio.is_remote(self.directory) or not os.path.isdir(self.directory):
            return
        for attempt in range(attempts):
            left = [name for name in os.listdir(self.directory) if TMP_MARKER in name]
            if not left:
                return
            if attempt:
                time.sleep(0.2)
            for name in left:
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def check_for_errors(self) -> None:
        """Raises `CheckpointSaveError` if a finished asynchronous save failed (cheap: call every
        step, so a full disk stops the run at the step its save failed, not one interval later)."""
        with self._save_errors(self._pending_step):
            self._manager.check_for_errors()
            if self._in_flight and not self._manager.is_saving_in_progress():
                # The background write has ended: joining it returns at once, or raises its error.
                self._in_flight = False
                self._manager.wait_until_finished()

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
        """Blocks until any in-flight asynchronous save has finished and been committed.

        Raises:
          CheckpointSaveError: that save failed.
        """
        with self._save_errors(self._pending_step):
            self._manager.wait_until_finished()
            self._manager.check_for_errors()

    def close(self) -> None:
        """Waits for pending saves and releases the manager.

        Raises:
          CheckpointSaveError: the last save failed (the manager is released all the same).
        """
        try:
            self.wait()
        finally:
            self._manager.close()
            if self._failed:  # again: the failed write's other threads may have added files since
                self._remove_temporary(attempts=25)


def restore_params(path: str, abstract_params: Any, *, partial: bool = True) -> Any:
    """Loads only the parameters of a checkpoint (initialising a fine-tuning run from pretraining).

    Args:
      path: anything `resolve` accepts (a run's newest step is used).
      abstract_params: pytree of `jax.ShapeDtypeStruct` with target shardings. With `partial`,
        it may be a subtree of what was saved (e.g. only the encoder of a pretraining model).
      partial: allow the checkpoint to hold more parameters than requested.
    Returns:
      The parameter pytree, sharded as `abstract_params` asks.
    Raises:
      CheckpointDamagedError: nothing readable there (a run's damaged newest step is skipped
        with a warning: `load_newest_readable`).
    """
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_params)

    def load(found: Resolved) -> Any:
        with ocp.PyTreeCheckpointer() as checkpointer:
            return checkpointer.restore(
                found.params_dir,
                args=ocp.args.PyTreeRestore(item=abstract_params, restore_args=restore_args, partial_restore=partial),
            )

    return load_newest_readable(path, load)


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

    def load(found: Resolved) -> Any:
        with ocp.PyTreeCheckpointer() as checkpointer:
            metadata = checkpointer.metadata(found.params_dir).item_metadata.tree
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
            return checkpointer.restore(found.params_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))

    return load_newest_readable(path, load)


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
    check_init_params: Callable[[str, Any], Any] | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> Start:
    """Decides how a run starts, in this order (the first that applies wins):

      1. Resume: the run's own newest finished checkpoint (`manager`'s directory): parameters,
         optimizer state, step, RNG and every process's input position, placed on the current
         mesh (which may differ from the one that wrote it). A damaged step is set aside and the
         next older one used (`resume_newest_good`); a model that does not fit it is an error.
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
      check_init_params: `(path, abstract_params)`, raising `ModelMismatchError` when
        `init_checkpoint` does not fit; called before `init()` compiles anything.
      run_config: the new run's resolved config (names the differing model fields in errors).
    Returns:
      `Start`.
    Raises:
      ModelMismatchError: the run's own checkpoint (or init_checkpoint) does not fit the model.
      CheckpointDamagedError: the run has checkpoints and none of them is readable.
    """
    resumed = resume_newest_good(manager, abstract_params, abstract_rest, run_config=run_config)
    if resumed is not None:
        return resumed
    if init_checkpoint and check_init_params is not None:
        check_init_params(init_checkpoint, abstract_params)  # before anything is compiled
    params, rest = init()
    if init_checkpoint:
        if load_init_params is None:
            params = restore_params(init_checkpoint, abstract_params, partial=True)
        else:
            params = load_init_params(init_checkpoint, abstract_params, params)
        log.info("initialised parameters from %s", resolve(init_checkpoint).describe())
        return Start(params, rest, "initialised")
    return Start(params, rest, "fresh")


# ---------------------------------------------------------------------------------------------
# Faults on disk: damaged steps, a model that does not match its checkpoint, failed saves.
# (Separate functions on top of the layout above; `restore_or_init` and the loaders call them.)
# ---------------------------------------------------------------------------------------------

# RUN/checkpoints/damaged/<step>[-<n>]: where a damaged step is set aside (renamed, never
# deleted). Not a number, so neither Orbax (digit names only) nor `finished_steps` sees it.
DAMAGED = "damaged"


class CheckpointDamagedError(ValueError):
    """No readable checkpoint where one was expected; the message is one line naming each step
    tried and why (a ValueError, so the command-line tools print it as their one-line error)."""


class ModelMismatchError(ValueError):
    """The checkpoint's parameters do not fit the model being built; the message lists every
    differing parameter with both shapes and every differing model config field."""


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (full disk, unwritable folder); one line with the path
    and the OS error. The previous checkpoints are untouched."""


def _json_problem(path: str, what: str) -> tuple[str | None, Any]:
    """(reason it is unusable or None, the parsed JSON)."""
    if not fileio.isfile(path):
        return f"{what} is missing", None
    try:
        return None, json.loads(fileio.read_text(path))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"{what} is not valid JSON ({type(e).__name__}: {str(e).splitlines()[0][:120]})", None


def step_problem(step_dir: str, *, training: bool = True) -> str | None:
    """Why a step folder cannot be restored, from what can be checked without reading arrays.

    Checks that every item a resume needs is there (`params/`, `train_state/` with their Orbax
    `_METADATA`, the run config, the input position) and that the JSON parts parse with the
    layout this module writes. A truncated array file is only found by reading it (the restore
    itself; `describe_error` turns that failure into a reason).

    Args:
      step_dir: a step folder (RUN/checkpoints/<step>) or, with training=False, any folder with
        a params/ item (an export, a step read for its parameters only).
      training: also require train_state/, config/ and data/ (what a resume reads).
    Returns:
      None when the step looks complete, else a short reason naming the missing/broken part.
    """
    items = (PARAMS, TRAIN_STATE) if training else (PARAMS,)
    for item in items:
        if not fileio.isdir(fileio.join(step_dir, item)):
            return f"no {item}/ folder"
        problem, meta = _json_problem(fileio.join(step_dir, item, "_METADATA"), f"{item}/_METADATA")
        if problem:
            return problem
        if not isinstance(meta, Mapping) or "tree_metadata" not in meta:
            return f"{item}/_METADATA has no tree metadata"
    if not training:
        return None
    problem, _ = _json_problem(fileio.join(step_dir, CONFIG, "metadata"), f"{CONFIG}/metadata")
    if problem:
        return problem
    problem, data = _json_problem(fileio.join(step_dir, DATA, "metadata"), f"{DATA}/metadata (the input position)")
    if problem:
        return problem
    count = data.get("process_count") if isinstance(data, Mapping) else None
    states = data.get("states") if isinstance(data, Mapping) else None
    if not isinstance(count, int) or count < 1 or not isinstance(states, list) or len(states) != count:
        return f"{DATA}/metadata (the input position) does not hold one position per process"
    return None


def describe_error(error: BaseException) -> str:
    """One line for a failed read: the exception type and its most telling line (TensorStore's
    OUT_OF_RANGE / DATA_LOSS / NOT_FOUND line when there is one, which names the file)."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:  # Orbax wraps TensorStore's error
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    for e in chain:
        for line in str(e).splitlines():
            if any(code in line for code in ("OUT_OF_RANGE", "DATA_LOSS", "NOT_FOUND")):
                return f"{type(e).__name__}: {line.strip()[:300]}"
    lines = [line.strip() for line in str(chain[0]).splitlines() if line.strip()]
    return f"{type(chain[0]).__name__}: {(lines or [''])[0][:300]}"


def _is_damage(error: BaseException) -> bool:
    """Whether a failed read means the files are bad (not: out of memory, a mismatched model)."""
    if isinstance(error, (ModelMismatchError, CheckpointNotFoundError, MemoryError, KeyboardInterrupt)):
        return False
    return "RESOURCE_EXHAUSTED" not in str(error)


def set_aside(step_dir: str) -> str:
    """Renames a damaged step folder to <checkpoints>/damaged/<step> (with -1, -2, ... when that is
    taken) and returns the new path. Never deletes: the files stay for inspection."""
    step_dir = step_dir.rstrip("/")
    parent, name = os.path.dirname(step_dir), os.path.basename(step_dir)
    target_dir = fileio.join(parent, DAMAGED)
    fileio.makedirs(target_dir)
    target, n = fileio.join(target_dir, name), 0
    while fileio.exists(target):
        n += 1
        target = fileio.join(target_dir, f"{name}-{n}")
    fileio.rename(step_dir, target)
    return target


def candidates(path: str | os.PathLike) -> list[Resolved]:
    """What a loader may read for `path`, best first: for a run or a checkpoints/ folder every
    finished step, newest first (`resolve` gives the first); otherwise just `resolve(path)`."""
    found = resolve(path)
    if found.kind not in ("run", "checkpoints"):
        return [found]
    root = os.path.dirname(found.step_dir)
    out = []
    for step in reversed(finished_steps(root)):
        step_dir = fileio.join(root, str(step))
        out.append(dataclasses.replace(found, params_dir=fileio.join(step_dir, PARAMS), step_dir=step_dir, step=step))
    return out


def load_newest_readable(path: str | os.PathLike, load: Callable[[Resolved], Any]) -> Any:
    """`load(found)` on the newest readable checkpoint at `path` (`candidates`), for loaders.

    A step that fails (`step_problem`, or `load` raising for a damaged file) is reported in one
    warning line naming the step and why, and the next older one is tried; it is left in place
    (a loader does not rename another run's files; a resuming run sets it aside). A
    `ModelMismatchError` is not damage and propagates at once.

    Raises:
      CheckpointDamagedError: no candidate could be read (one reason per step in the message).
    """
    found_all = candidates(path)
    reasons = []
    for i, found in enumerate(found_all):
        problem = step_problem(found.step_dir or os.path.dirname(found.params_dir), training=False)
        if problem is None:
            try:
                return load(found)
            except Exception as e:
                if not _is_damage(e):
                    raise
                problem = describe_error(e)
        where = found.step_dir or found.params_dir
        reasons.append(f"{where}: {problem}")
        if i + 1 < len(found_all):
            log.warning("checkpoint %s is damaged (%s); reading the previous step instead", where, problem)
    raise CheckpointDamagedError(f"{path}: no readable checkpoint ({'; '.join(reasons)})")


def _flat_shapes(tree: Any, prefix: tuple[str, ...] = ()) -> dict[str, tuple[int, ...]]:
    """{"a/b/kernel": shape} of a nested mapping whose leaves have `.shape` (boxes stripped)."""
    if isinstance(tree, Mapping):
        if set(tree) == {"value"} and not isinstance(tree["value"], Mapping):
            return _flat_shapes(tree["value"], prefix)
        out: dict[str, tuple[int, ...]] = {}
        for k, v in tree.items():
            out.update(_flat_shapes(v, (*prefix, str(k))))
        return out
    return {"/".join(prefix): tuple(getattr(tree, "shape", ()))}


def config_differences(saved: Mapping[str, Any] | None, new: Mapping[str, Any] | None, prefix: str) -> list[str]:
    """`prefix.field: checkpoint A, this run B` for every differing field of two flat config dicts."""
    if not isinstance(saved, Mapping) or not isinstance(new, Mapping):
        return []
    return [
        f"{prefix}.{k}: checkpoint {saved.get(k)!r}, this run {new.get(k)!r}"
        for k in sorted(set(saved) | set(new))
        if saved.get(k) != new.get(k)
    ]


@dataclasses.dataclass(frozen=True)
class ParamsComparison:
    """How a checkpoint's parameters line up with a model's (paths "a/b/kernel").

    Attributes:
      matching: paths with the same shape in both.
      mismatched: {path: (checkpoint shape, model shape)}.
      missing: paths the model has and the checkpoint lacks.
      unexpected: paths the checkpoint has and the model lacks.
    """

    matching: tuple[str, ...]
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    @property
    def exact(self) -> bool:
        return not (self.mismatched or self.missing or self.unexpected)


def compare_params(saved: Any, target: Any) -> ParamsComparison:
    """Compares two parameter trees by path and shape (leaves with `.shape`: metadata, arrays,
    ShapeDtypeStructs; flax boxes are looked through)."""
    a, b = _flat_shapes(saved), _flat_shapes(target)
    return ParamsComparison(
        matching=tuple(sorted(k for k in b if k in a and a[k] == b[k])),
        mismatched={k: (a[k], b[k]) for k in sorted(b) if k in a and a[k] != b[k]},
        missing=tuple(sorted(k for k in b if k not in a)),
        unexpected=tuple(sorted(k for k in a if k not in b)),
    )


def mismatch_message(
    where: str,
    comparison: ParamsComparison,
    *,
    saved_model_config: Mapping[str, Any] | None = None,
    model_config: Mapping[str, Any] | None = None,
    hint: str = "",
) -> str:
    """The text of a `ModelMismatchError`: the differing model config fields, then every
    parameter with both shapes, then what to do."""
    lines = [f"{where} does not match the model being built:"]
    fields = config_differences(saved_model_config, model_config, "model")
    if fields:
        lines.append("  config fields that differ: " + "; ".join(fields))
    for path, (old, new) in comparison.mismatched.items():
        lines.append(f"  {path}: checkpoint {old}, model {new}")
    lines += [f"  {path}: not in the checkpoint" for path in comparison.missing]
    lines += [f"  {path}: in the checkpoint, not in the model" for path in comparison.unexpected]
    if hint:
        lines.append("  " + hint)
    return "\n".join(lines)


def check_resume_matches(
    step_dir: str,
    saved_params: Any,
    saved_rest: Any,
    abstract_params: Any,
    abstract_rest: Any,
    *,
    run_config: Mapping[str, Any] | None = None,
) -> None:
    """Raises `ModelMismatchError` unless a step's parameters have exactly the shapes of the run
    being resumed, and its train state the same entries (the optimizer state mirrors the
    parameters). Compares Orbax metadata (`CheckpointManager.item_metadata`): nothing is
    restored, written or compiled.

    Args:
      step_dir: the step folder (named in the message; its run config names the differing fields).
      saved_params, saved_rest: the step's metadata trees of params/ and train_state/.
      abstract_params, abstract_rest: the run's targets.
      run_config: the new run's resolved config.
    """
    problems = compare_params(saved_params, abstract_params)
    if problems.exact:
        rest = compare_params(saved_rest, abstract_rest)
        problems = ParamsComparison(
            (),
            {f"{TRAIN_STATE}/{k}": v for k, v in rest.mismatched.items()},
            tuple(f"{TRAIN_STATE}/{k}" for k in rest.missing),
            tuple(f"{TRAIN_STATE}/{k}" for k in rest.unexpected),
        )
    if problems.exact:
        return
    saved_config = None
    try:
        saved_config = json.loads(fileio.read_text(fileio.join(step_dir, CONFIG, "metadata")))
    except (OSError, ValueError):
        saved_config = None  # the shapes alone still say what differs
    raise ModelMismatchError(
        mismatch_message(
            f"checkpoint {step_dir}",
            problems,
            saved_model_config=(saved_config or {}).get("model") if isinstance(saved_config, dict) else None,
            model_config=(run_config or {}).get("model"),
            hint="resume with the checkpoint's model config, or start a new --workdir "
            "(with config.init.checkpoint to initialise from this one)",
        )
    )


def newest_params_metadata(path: str) -> tuple[Resolved, Any]:
    """(what was read, its parameters' metadata tree) for the newest readable checkpoint at
    `path` (`load_newest_readable`): what an init.checkpoint is compared against."""

    def read(found: Resolved):
        with ocp.StandardCheckpointer() as ckptr:
            meta = ckptr.metadata(found.params_dir)
        tree = getattr(meta, "item_metadata", meta)
        return found, getattr(tree, "tree", tree)

    return load_newest_readable(path, read)


def check_init_matches(
    path: str,
    abstract_params: Any,
    *,
    model_config: Mapping[str, Any] | None = None,
    allow_partial: bool = False,
) -> ParamsComparison:
    """Compares the parameters at `path` (config.init.checkpoint; its newest readable step) with
    the part of the model to initialise from it, from metadata only.

    Args:
      path: anything `resolve` accepts.
      abstract_params: the (sub)tree of the model that is to come from the checkpoint.
      model_config: the new model's config dict, to name the config fields that differ.
      allow_partial: config.init.partial: accept a partial match (the caller restores what
        matches and keeps the rest freshly initialised).
    Returns:
      The comparison (exact unless `allow_partial`).
    Raises:
      ModelMismatchError: not an exact match and not `allow_partial`, or nothing matches at all.
      CheckpointDamagedError: no readable checkpoint at `path`.
    """
    found, saved = newest_params_metadata(path)
    comparison = compare_params(saved, abstract_params)
    if comparison.exact or (allow_partial and comparison.matching):
        return comparison
    raise ModelMismatchError(init_mismatch_message(found, comparison, model_config))


def init_mismatch_message(found: Resolved, comparison: ParamsComparison, model_config: Mapping[str, Any] | None) -> str:
    """`mismatch_message` for config.init.checkpoint, with the model config recorded beside the
    parameters (an export's model.json or the step's run config) against the new one."""
    saved_model = None
    try:
        if found.kind == "export":
            saved_model = json.loads(fileio.read_text(fileio.join(found.export_dir, MODEL_JSON))).get("config")
        elif found.config_item and fileio.isfile(found.config_item):
            saved_model = json.loads(fileio.read_text(found.config_item)).get("model")
    except (OSError, ValueError, AttributeError):
        saved_model = None  # the shapes alone still say what differs
    return mismatch_message(
        f"init.checkpoint {found.describe()}",
        comparison,
        saved_model_config=saved_model,
        model_config=model_config,
        hint="use the checkpoint's model config, or set config.init.partial=True to restore "
        "the parameters that match and initialise the others freshly",
    )


def check_writable(directory: str) -> None:
    """Creates `directory` if needed and writes and removes a probe file there, so an unwritable
    workdir stops a run before anything is compiled.

    Raises:
      CheckpointSaveError: one line with the path and the OS error.
    """
    probe = fileio.join(directory, f".write-probe-{os.getpid()}")
    try:
        fileio.makedirs(directory)
        fileio.write_text(probe, "ok")
        fileio.remove(probe)
    except OSError as e:
        reason = f"[Errno {e.errno}] {e.strerror} ({errno.errorcode.get(e.errno, '?')})" if e.errno else str(e)
        raise CheckpointSaveError(f"cannot write to {directory}: {reason}") from e


def resume_newest_good(
    manager: CheckpointManager,
    abstract_params: Any,
    abstract_rest: Any,
    *,
    run_config: Mapping[str, Any] | None = None,
) -> Start | None:
    """Restores the newest readable step of a run; None when the run has no checkpoint yet.

    Newest first, each step is checked (`step_problem`), compared with the model
    (`check_resume_matches`: a mismatch raises at once, it is not damage) and restored. A step
    that fails is damaged: once an older step has been restored, every damaged newer one is
    set aside (`set_aside`, process 0; one warning line each with the reason), so Orbax and later
    saves never see it. When no step is readable nothing is renamed and the run stops.

    Raises:
      ModelMismatchError: the checkpoint does not fit the model.
      CheckpointDamagedError: the run has steps and none is readable (one reason per step).
    """
    damaged: list[tuple[int, str, str]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        step_dir = fileio.join(manager.directory, str(step))
        problem = step_problem(step_dir)
        if problem is None:
            try:
                saved = manager.item_metadata(step)
                check_resume_matches(
                    step_dir, saved[PARAMS], saved[TRAIN_STATE], abstract_params, abstract_rest, run_config=run_config
                )
                params, rest, saved_config, data_state = manager.restore(step, abstract_params, abstract_rest)
            except Exception as e:
                if not _is_damage(e):
                    raise
                problem = describe_error(e)
            else:
                for bad_step, bad_dir, reason in damaged:
                    moved = set_aside(bad_dir) if jax.process_index() == 0 else "damaged/"
                    log.warning(
                        "checkpoint step %d is damaged (%s): set aside as %s; resuming from step %d",
                        bad_step,
                        reason,
                        moved,
                        step,
                    )
                if damaged:
                    if jax.process_count() > 1:
                        multihost_utils.sync_global_devices("xlsr_jax_set_aside_damaged_steps")
                    manager.reload()
                log.info("resumed from checkpoint step %d", step)
                return Start(params, rest, "resumed", step, saved_config, data_state)
        damaged.append((step, step_dir, problem))
    if damaged:
        raise CheckpointDamagedError(
            f"{manager.directory}: no readable checkpoint to resume from; "
            + "; ".join(f"step {s} ({reason})" for s, _, reason in damaged)
            + ". Nothing was renamed; move the damaged steps away (or use a new --workdir) to start afresh"
        )
    return None


def restore_matching(
    path: str, abstract_params: Any, fresh_params: Any, comparison: ParamsComparison, *, where: str = "init.checkpoint"
) -> Any:
    """Parameters from `path` for every leaf `comparison` found matching, `fresh_params` for the
    rest (config.init.partial); with an exact comparison simply `restore_params`. Logs the
    lists of what was restored and what was freshly initialised.

    Args:
      path: anything `resolve` accepts.
      abstract_params: ShapeDtypeStruct tree (target shardings).
      fresh_params: freshly initialised parameters of the same structure.
      comparison: `check_init_matches(path, abstract_params, ...)`.
    """
    if comparison.exact:
        return restore_params(path, abstract_params, partial=True)
    matching = set(comparison.matching)

    def keep(tree: Any, prefix: tuple[str, ...] = ()) -> Any:
        if isinstance(tree, Mapping):
            out = {k: keep(v, (*prefix, str(k))) for k, v in tree.items()}
            return {k: v for k, v in out.items() if v is not None and v != {}}
        return tree if "/".join(prefix) in matching else None

    restored = restore_params(path, keep(abstract_params), partial=True)

    def merge(fresh: Any, got: Any) -> Any:
        if isinstance(fresh, Mapping):
            got = got if isinstance(got, Mapping) else {}
            return {k: merge(v, got.get(k)) if k in got else v for k, v in fresh.items()}
        return fresh if got is None else got

    fresh_paths = sorted(set(_flat_shapes(abstract_params)) - matching)
    log.warning(
        "%s %s: partial initialisation (config.init.partial): restored %d parameters %s; "
        "freshly initialised %d %s; only in the checkpoint (dropped) %s",
        where,
        path,
        len(matching),
        sorted(matching),
        len(fresh_paths),
        fresh_paths,
        list(comparison.unexpected),
    )
    return merge(fresh_params, restored)
