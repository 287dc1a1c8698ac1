"""Training metrics out of the process: TensorBoard event files, the console and a progress bar.

Only process 0 writes (every process computes the same replicated scalars). Values arrive
already on the host: the trainer fetches device metrics only at log steps.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping

import jax
import numpy as np

from xlsr_jax import fileio

log = logging.getLogger("xlsr_jax.train")

# Peak dense throughput per device (FLOP/s) for the MFU estimate, keyed by a substring of
# `jax.Device.device_kind`. bf16 for accelerators (vendor data sheets); the CPU figure is the
# float32 matmul rate measured on the 2-core development machine for the whole host.
PEAK_FLOPS_BY_DEVICE_KIND = (
    ("TPU v6", 918e12),
    ("TPU v5p", 459e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v4", 275e12),
    ("TPU v3", 123e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


def peak_flops_per_device(configured: float = 0.0) -> float:
    """The peak FLOP/s of one device: `configured` if > 0, else looked up by device kind.

    Returns 0.0 (MFU not reported) for an unknown device kind and no configured value.
    """
    if configured > 0:
        return float(configured)
    kind = jax.devices()[0].device_kind
    for key, flops in PEAK_FLOPS_BY_DEVICE_KIND:
        if key.lower() in kind.lower():
            return flops
    return 0.0


def _format(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.3e}"


def drop_records_after(jsonl_path: str, step: int) -> int:
    """Removes the records of steps after `step` from a metrics.jsonl (atomic rewrite).

    A run that resumes from checkpoint `step` trains the later steps again; without this the
    file would hold them twice (once from before the interruption), so readers see each step
    once. A last line cut short by a kill is dropped too.

    Returns:
      How many lines were removed.
    """
    if not fileio.exists(jsonl_path):
        return 0
    lines = fileio.read_text(jsonl_path).splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # half a line written when the process was killed
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    if len(kept) != len(lines):
        fileio.write_text(jsonl_path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def read_jsonl(jsonl_path: str) -> dict[int, dict[str, float]]:
    """A run's metrics.jsonl as {step: {name: value}} (the train and eval records of a step
    merged; a later record of the same name wins)."""
    out: dict[int, dict[str, float]] = {}
    for line in fileio.read_text(jsonl_path).splitlines():
        if line.strip():
            record = json.loads(line)
            out.setdefault(record.pop("step"), {}).update(record)
    return out


class MetricWriter:
    """Writes scalar metrics to TensorBoard and the console, and drives a progress bar."""

    def __init__(
        self,
        logdir: str,
        *,
        total_steps: int,
        initial_step: int = 0,
        progress_bar: bool = True,
        jsonl_path: str | None = None,
    ):
        """Opens the event file (process 0 only) and the progress bar.

        Args:
          logdir: directory for TensorBoard event files (local or gs://...).
          jsonl_path: also append one JSON line per write here (easy to read back in scripts;
            local or gs://...).
          total_steps: last step of the run (for the bar's ETA).
          initial_step: step the run starts (resumes) from.
          progress_bar: show a tqdm bar on stderr (off in tests / non-interactive jobs).
        """
        self._is_writer = jax.process_index() == 0
        self._tb = None
        self._bar = None
        self._jsonl = None
        if not self._is_writer:
            return
        # Local directory or gs://...: see fileio for how each is written.
        self._tb = fileio.ScalarEventWriter(logdir)
        if jsonl_path:
            drop_records_after(jsonl_path, initial_step)
            self._jsonl = fileio.JsonlAppender(jsonl_path)
        if progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True, file=sys.stderr, desc="train"
            )

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Writes namespaced scalars (e.g. `train/loss`) at `step` to TensorBoard and the log."""
        if not self._is_writer:
            return
        scalars = {k: float(np.asarray(v)) for k, v in scalars.items()}
        self._tb.write_scalars(step, scalars)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, **scalars}))
            self._jsonl.flush()
        text = " ".join(f"{k}={_format(v)}" for k, v in sorted(scalars.items()))
        if self._bar is not None:
            self._bar.write(f"[step {step}] {text}")
            if "train/loss" in scalars:
                self._bar.set_postfix(loss=f"{scalars['train/loss']:.3f}", refresh=False)
        else:
            log.info("[step %d] %s", step, text)

    def advance(self, step: int) -> None:
        """Moves the progress bar to `step` (cheap; call every step)."""
        if self._bar is not None and step > self._bar.n:
            self._bar.update(step - self._bar.n)

    def warn(self, message: str) -> None:
        """Logs a warning on process 0 without breaking the progress bar."""
        if not self._is_writer:
            return
        if self._bar is not None:
            self._bar.write(f"WARNING: {message}")
        log.warning(message)

    def close(self) -> None:
        """Flushes and closes the event file and the bar."""
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()
