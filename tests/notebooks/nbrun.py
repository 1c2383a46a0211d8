"""Runs a notebook top to bottom in its reduced form (RLP_NOTEBOOK_FAST=1) and returns it with
its outputs; the notebook tests check what it drew and wrote."""

import os

import nbformat
from nbclient import NotebookClient

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "notebooks")


def execute(name, workdir, monkeypatch):
  # The kernels inherit the suite's XLA flags: fast compile for the small models of 02 and 03;
  # 01's test drops it (full_optimization), SmolLM2's programs running faster than they compile
  monkeypatch.setenv("RLP_NOTEBOOK_FAST", "1")
  monkeypatch.setenv("RLP_NOTEBOOK_WORKDIR", str(workdir))
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  nb = nbformat.read(os.path.join(HERE, f"{name}.ipynb"), as_version=4)
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": HERE}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  errors = [o for o in outputs if o.get("output_type") == "error"]
  assert not errors, errors
  assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} drew no figure"
  return nb
