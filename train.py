"""Train an XLSR / XLS-R model: `python train.py --config configs/<name>.py --workdir DIR`.

Config overrides on the command line: `--config.optim.lr=5e-4`, recipe variants after a colon:
`--config configs/xls_r.py:size=300m,runlocal`. Re-running with the same --workdir resumes from its
newest checkpoint.

Multi-host: on TPU pods `jax.distributed.initialize()` needs no arguments (it is called
automatically when more than one host is detected); on GPU clusters or several local
processes pass --coordinator_address, --num_processes and --process_id.
"""

from __future__ import annotations

import logging
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, config).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process runs outside TPU pods."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run (with --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "auto: initialise jax.distributed on TPU pods / with the coordinator flags; "
    "on: always (cluster auto-detection); off: single process.",
)
flags.mark_flags_as_required(["config", "workdir"])


def _initialize_distributed() -> None:
    """Joins the multi-process JAX cluster when there is one (before any other JAX call)."""
    import jax

    if _DISTRIBUTED.value == "off":
        return
    if _COORDINATOR.value:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value
        )
    elif _DISTRIBUTED.value == "on" or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0:
        # TPU pod slices (and SLURM / Open MPI clusters) are auto-detected by JAX.
        jax.distributed.initialize()


def main(argv: list[str]) -> None:
    """Sets up logging and the cluster, then runs `trainer.train_and_evaluate`."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    _initialize_distributed()
    import jax

    from data_pipelines.pipeline import VocabularyMismatchError
    from data_pipelines.sources import CorpusLayoutError
    from xlsr_jax import trainer

    logging.getLogger("xlsr_jax").setLevel(logging.INFO)
    logging.getLogger("xlsr_jax.train").info(
        "process %d/%d, %d local / %d global devices (%s)",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices()[0].device_kind,
    )
    from xlsr_jax import checkpointing

    try:
        trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except CorpusLayoutError as e:
        # A corpus folder not in its reader's layout is the user's to fix: one line naming the
        # file, not a traceback through the trainer (it is found at start, before any step).
        raise SystemExit(f"train.py: corpus layout error: {e}") from None
    except VocabularyMismatchError as e:  # a config to change, not a crash (found before any step)
        raise SystemExit(f"error: {e}") from None
    except (
        checkpointing.CheckpointSaveError,
        checkpointing.CheckpointDamagedError,
        checkpointing.ModelMismatchError,
        OSError,  # e.g. a full disk met by metrics.jsonl before a checkpoint: "[Errno 28] ...: 'path'"
    ) as e:
        # What is wrong with the disk or the checkpoint, without a traceback; exit status 1.
        logging.getLogger("xlsr_jax.train").error("%s", e)
        raise SystemExit(1) from None


if __name__ == "__main__":
    app.run(main)
