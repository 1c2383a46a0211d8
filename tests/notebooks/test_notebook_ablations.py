"""02 (the testbed and its ablations) runs top to bottom on CPU in its reduced form and draws its
figures; its runs' results are written where the notebook says."""

import json

import pytest

from nbrun import execute


@pytest.mark.slow
def test_ablations_notebook(tmp_path, monkeypatch):
  execute("02_ablations", tmp_path, monkeypatch)
  rows = [json.loads(l) for l in (tmp_path / "results.jsonl").read_text().splitlines()]
  names = {r["run"] for r in rows}
  assert (tmp_path / "testbed.png").exists() and (tmp_path / "discovery.png").exists()
  # the testbed's runs and one variant of each knob (thought length, group size)
  assert {"rlp", "cpt"} <= names and any(n[0] == "T" for n in names) and \
      any(n[0] == "G" for n in names), names
