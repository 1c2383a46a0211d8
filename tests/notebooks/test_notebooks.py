"""Each notebook runs top to bottom on CPU in its reduced form (RLP_NOTEBOOK_FAST=1) and draws
its figures."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "notebooks")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_quickstart", "02_ablations", "03_scaling_up"])
def test_notebook_executes_and_plots(name, tmp_path, monkeypatch):
  # The kernels inherit the suite's fast-compile XLA flags (faster here than full optimisation,
  # SmolLM2 in 01 included)
  monkeypatch.setenv("RLP_NOTEBOOK_FAST", "1")
  monkeypatch.setenv("RLP_NOTEBOOK_WORKDIR", str(tmp_path))
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  nb = nbformat.read(os.path.join(HERE, f"{name}.ipynb"), as_version=4)
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": HERE}}).execute()
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors
  assert images, f"{name} drew no figure"


@pytest.mark.parametrize("name", ["01_quickstart", "02_ablations", "03_scaling_up"])
def test_each_form_has_its_own_workdir(name, monkeypatch):
  """The reduced form never resumes or deletes the full form's runs: the parameters cell (run
  as the notebook runs it) gives each form its own default workdir."""
  nb = nbformat.read(os.path.join(HERE, f"{name}.ipynb"), as_version=4)
  params = next(c.source for c in nb.cells if c.cell_type == "code" and "WORKDIR =" in c.source)
  monkeypatch.delenv("RLP_NOTEBOOK_WORKDIR", raising=False)
  found = {}
  for fast in ("0", "1"):
    monkeypatch.setenv("RLP_NOTEBOOK_FAST", fast)
    scope = {"os": os, "REPO": "/repo"}
    exec(params, scope)  # noqa: S102 (the notebook's own cell)
    found[fast] = scope["WORKDIR"]
  assert found["0"] != found["1"] and all(w.startswith("/repo/workdirs/") for w in found.values())
