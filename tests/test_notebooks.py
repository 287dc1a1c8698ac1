"""Runs every notebook in experiments/notebooks/ top to bottom on CPU, so they never rot.

Each notebook is executed with nbclient in a fresh Python kernel of this interpreter (an explicit
kernel spec, so a user-level "python3" kernel elsewhere cannot be picked up), with JAX on CPU and
test parameters injected after the cell tagged `parameters` (papermill's convention): a temporary
run directory and tiny step counts. A cell error fails the test; then each notebook's results are
checked: fine-tuning lowers the CER and the export matches transformers' logits, pretraining
resumes at the saved step, the representations notebook encodes every language and draws its
plots. The executed notebooks are kept in pytest's tmp_path for inspection.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import os
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # each notebook executed in a kernel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(REPO, "experiments", "notebooks")
NOTEBOOKS = sorted(name for name in os.listdir(NOTEBOOK_DIR) if name.endswith(".ipynb"))
KERNEL_NAME = "xlsr-jax-test"
CELL_TIMEOUT_S = 600

# Test parameters per notebook (on top of the notebook's own CPU defaults).
PARAMETERS = {
    "finetuning.ipynb": {"STEPS": 60},
    "pretraining.ipynb": {"STEPS": 10, "EXTRA_STEPS": 5, "SHOW_TENSORBOARD": False},
    "representations.ipynb": {"PRETRAIN_STEPS": 10, "UTTERANCES_PER_LANGUAGE": 10},
}


def _kernel_manager(tmp_path) -> KernelManager:
    """A kernel manager for this interpreter's ipykernel, with JAX on CPU."""
    spec_dir = tmp_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "xlsr-jax tests",
        "language": "python",
        # Merged into this process's environment (the JAX compilation cache set by conftest too).
        "env": {"JAX_PLATFORMS": "cpu", "MPLBACKEND": "module://matplotlib_inline.backend_inline"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def _inject_parameters(nb, parameters: dict, setup: str = "") -> None:
    """Inserts a cell assigning `parameters` (after running `setup`) right after the `parameters` cell."""
    tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    lines = ["# Injected by tests/test_notebooks.py", "import sys as _sys", ""]
    # The kernel must be this interpreter (the project's virtualenv), not another Python.
    lines.append(f"assert _sys.executable == {sys.executable!r}, _sys.executable")
    lines += setup.splitlines()
    lines += [f"{name} = {value!r}" for name, value in parameters.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(tagged[0] + 1, cell)


def execute_notebook(name: str, tmp_path, setup: str = "", **parameters) -> nbformat.NotebookNode:
    """Executes experiments/notebooks/`name` with `parameters`; returns the executed notebook.

    `setup`: code the injected cell runs first (in the kernel).

    Raises nbclient's CellExecutionError (with the cell's traceback) when a cell fails.
    """
    nb = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
    _inject_parameters(nb, parameters, setup)
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=CELL_TIMEOUT_S,
        # The kernel starts in the notebook's own folder, as in Jupyter.
        resources={"metadata": {"path": NOTEBOOK_DIR}},
    )
    try:
        # cleanup_kc: shut the kernel down afterwards (nbclient leaves a kernel it did not create running).
        client.execute(cleanup_kc=True)
    finally:
        nbformat.write(nb, str(tmp_path / name))
    return nb


def stdout_of(cell) -> str:
    """A code cell's printed text."""
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("name") == "stdout")


def summary_of(nb) -> dict:
    """The JSON the last code cell prints (each notebook ends with a summary)."""
    last = [cell for cell in nb.cells if cell.cell_type == "code"][-1]
    return json.loads(stdout_of(last))


def png_outputs(nb) -> list[bytes]:
    """Every PNG image the notebook displayed, decoded."""
    images = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data:
                images.append(base64.b64decode(data["image/png"]))
    return images


def test_every_notebook_has_a_test():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"
    assert sorted(PARAMETERS) == NOTEBOOKS


def test_notebooks_are_committed_without_outputs():
    for name in NOTEBOOKS:
        nb = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{name}: stored outputs"


def test_finetuning_notebook_lowers_cer_and_exports(tmp_path):
    params = dict(PARAMETERS["finetuning.ipynb"], WORKDIR=str(tmp_path / "run"))
    summary = summary_of(execute_notebook("finetuning.ipynb", tmp_path, **params))
    start, end = summary["cer_start"], summary["cer_finetuned"]
    assert math.isfinite(start) and math.isfinite(end)
    # A tiny random stand-in after 60 updates: the CER must fall below where it started.
    assert end < start, (start, end)
    assert summary["steps"] == params["STEPS"]
    assert len(summary["transcripts"]) == 3 and all(t is not None for t in summary["transcripts"])
    assert os.path.isfile(os.path.join(summary["hf_export"], "model.safetensors"))
    # One test rather than two sharing a fixture: pytest-xdist could run the notebook twice.
    if importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"):
        assert summary["parity_max_abs_logit_diff"] is not None
        assert summary["parity_max_abs_logit_diff"] < 1e-3
    else:  # without the torch extra the notebook says it skipped the comparison
        assert summary["parity_max_abs_logit_diff"] is None


def test_pretraining_notebook_resumes_at_the_saved_step(tmp_path):
    params = dict(PARAMETERS["pretraining.ipynb"], WORKDIR=str(tmp_path / "run"))
    nb = execute_notebook("pretraining.ipynb", tmp_path, **params)
    summary = summary_of(nb)
    first, extra = params["STEPS"], params["EXTRA_STEPS"]
    assert summary["first_run_final_step"] == first
    assert summary["resumed_from_step"] == first
    assert summary["final_step"] == first + extra
    # The metrics the two runs wrote: no step trained twice, the second run's steps after the first's.
    with open(os.path.join(params["WORKDIR"], "metrics.jsonl"), encoding="utf-8") as f:
        steps = [row["step"] for row in map(json.loads, f) if "train/loss" in row]
    assert steps == sorted(set(steps)) and steps[-1] == first + extra, steps
    assert any(s > first for s in steps) and first in steps
    assert all(math.isfinite(v) for v in summary["train_loss"].values())
    assert png_outputs(nb), "no loss-curve plot"


def test_pretraining_notebook_on_a_gs_workdir(tmp_path):
    """WORKDIR = gs://...: the run, its resume and the notebook's own reads all go to the bucket."""
    root = tmp_path / "gcs"
    # The kernel enters the gs:// mock of tests/test_fileio.py (gs://x -> <root>/x) for its lifetime.
    setup = "\n".join(
        [
            f"_sys.path.insert(0, {REPO!r})",
            "from tests.test_fileio import gcs_mock as _gcs_mock",
            f"_bucket = _gcs_mock({str(root)!r})  # referenced: a collected generator would undo the mock",
            "_bucket.__enter__()",
        ]
    )
    params = dict(PARAMETERS["pretraining.ipynb"], WORKDIR="gs://bucket/run")
    before = set(os.listdir(NOTEBOOK_DIR))
    nb = execute_notebook("pretraining.ipynb", tmp_path, setup=setup, **params)
    assert set(os.listdir(NOTEBOOK_DIR)) == before, "a local copy of the gs:// path was written"
    summary = summary_of(nb)
    first, extra = params["STEPS"], params["EXTRA_STEPS"]
    assert (summary["resumed_from_step"], summary["final_step"]) == (first, first + extra)
    run = root / "bucket" / "run"
    assert summary["checkpoints"] and all((run / "checkpoints" / str(s)).is_dir() for s in summary["checkpoints"])
    assert (run / "metrics.jsonl").is_file() and (run / "config.json").is_file()
    assert list((run / "tensorboard").iterdir()), "no TensorBoard events in the bucket"


def test_representations_notebook_encodes_every_language_and_plots(tmp_path):
    params = dict(PARAMETERS["representations.ipynb"], WORKDIR=str(tmp_path / "run"))
    nb = execute_notebook("representations.ipynb", tmp_path, **params)
    summary = summary_of(nb)
    images = png_outputs(nb)
    assert len(images) >= 2 and all(image.startswith(b"\x89PNG") for image in images)
    languages = summary["languages"]
    assert len(languages) == 8 and summary["chance"] == 1 / 8  # every language of the shipped corpus
    per_language = params["UTTERANCES_PER_LANGUAGE"]
    assert summary["utterances"] == {"train": 8 * per_language, "test": 8 * per_language}
    # One held-out accuracy per layer (the Transformer's input and each block's output) for the
    # probe, the nearest-centroid check and the shuffled-label control. The tiny CPU model is only
    # modestly above chance (see the notebook), so no threshold is asserted on these.
    for key in ("language_id_accuracy", "nearest_centroid_accuracy", "shuffled_label_accuracy"):
        values = summary[key]
        assert sorted(values, key=int) == [str(i) for i in range(summary["num_layers"] + 1)], key
        assert all(0.0 <= a <= 1.0 for a in values.values()), (key, values)
    assert str(summary["layer_shown"]) in summary["language_id_accuracy"]
