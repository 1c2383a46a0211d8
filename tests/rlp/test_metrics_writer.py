"""MetricsWriter: metrics.jsonl rows (intervals kept as lists) and the optional Weights & Biases
mirror, run in wandb's offline mode (no network): every scalar and interval bound reaches the W&B
run's history, and a resumed run continues the same W&B run."""

import glob
import json
import os
import struct

import pytest

from rlp import configuration, metrics
from configs import tiny


def _wandb_records(workdir):
  """The history rows in wandb's offline run files. The files are a LevelDB-style log (a 7-byte
  header ':W&B' magic version, then 32 KiB blocks of records: crc32, length, type
  full/first/middle/last) of wandb's protobuf Records; read here without wandb's writer."""
  from wandb.proto import wandb_internal_pb2
  block, rows = 32768, []
  for path in sorted(glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "run-*.wandb"))):
    b = open(path, "rb").read()
    assert b[:4] == b":W&B", path
    pos, records, part = 7, [], b""
    while pos + 7 <= len(b):
      if block - pos % block < 7:  # a block's tail too short for a header is padding
        pos += block - pos % block
        continue
      _, n, kind = struct.unpack("<IHB", b[pos:pos + 7])
      if kind == 0 and n == 0:
        break
      data, pos = b[pos + 7:pos + 7 + n], pos + 7 + n
      if kind == 1:
        records.append(data)
      elif kind in (2, 3):
        part = (b"" if kind == 2 else part) + data
      elif kind == 4:
        records.append(part + data)
    for data in records:
      rec = wandb_internal_pb2.Record()
      rec.ParseFromString(data)
      if rec.WhichOneof("record_type") == "history":
        rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in rec.history.item})
  return rows


def _tb_scalars(workdir):
  """(tag, value, step) of the TensorBoard event files (TFRecord framing: length, crc, data, crc)."""
  from tensorboardX.proto import event_pb2
  got = set()
  for path in glob.glob(os.path.join(workdir, "tb", "*")):
    b, i = open(path, "rb").read(), 0
    while i < len(b):
      n = struct.unpack("<Q", b[i:i + 8])[0]
      e = event_pb2.Event()
      e.ParseFromString(b[i + 12:i + 12 + n])
      i += 12 + n + 4
      got |= {(v.tag, v.simple_value, e.step) for v in e.summary.value}
  return got


def test_jsonl_rows_keep_intervals_and_drop_non_finite(tmp_path):
  w = metrics.MetricsWriter(str(tmp_path))
  w.write(3, {"loss": 0.5, "eval/gain_ci": (-0.25, 1.5), "bad": float("nan")})
  w.close()
  assert metrics.read_metrics(str(tmp_path)) == [
      {"step": 3, "loss": 0.5, "eval/gain_ci": [-0.25, 1.5], "bad": None}]
  # TensorBoard: the same scalars, an interval as NAME/low and NAME/high, nothing non-finite
  assert _tb_scalars(str(tmp_path)) == {("loss", 0.5, 3), ("eval/gain_ci/low", -0.25, 3),
                                        ("eval/gain_ci/high", 1.5, 3)}


def test_wandb_offline_logs_every_scalar_and_resumes_the_same_run(tmp_path, monkeypatch):
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  wd = str(tmp_path)
  w = metrics.MetricsWriter(wd, tensorboard=False, wandb=dict(project="rlp-test", config={"a": 1}))
  w.write(1, {"loss": 0.25, "eval/gain_over_placebo/empty_ci": [-0.5, 0.75]})
  w.write(2, {"loss": 0.125})
  w.close()
  run_id = open(os.path.join(wd, "wandb_id")).read().strip()
  assert run_id
  rows = _wandb_records(wd)
  by_step = {r["_step"]: r for r in rows}
  assert by_step[1]["loss"] == 0.25 and by_step[2]["loss"] == 0.125
  assert by_step[1]["eval/gain_over_placebo/empty_ci/low"] == -0.5
  assert by_step[1]["eval/gain_over_placebo/empty_ci/high"] == 0.75
  # the resumed run writes into the same W&B run id
  w = metrics.MetricsWriter(wd, tensorboard=False, wandb=dict(project="rlp-test"))
  w.write(3, {"loss": 0.0625})
  w.close()
  assert open(os.path.join(wd, "wandb_id")).read().strip() == run_id
  dirs = glob.glob(os.path.join(wd, "wandb", "offline-run-*"))
  assert len(dirs) == 2 and all(d.endswith(run_id) for d in dirs)
  assert {r["_step"] for r in _wandb_records(wd)} == {1, 2, 3}


def test_wandb_project_without_wandb_is_a_config_error(monkeypatch):
  c = tiny.get_config()
  c.train.wandb_project = "p"
  import importlib.util
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "wandb" else real(name, *a))
  with pytest.raises(configuration.ConfigError, match="train.wandb_project.*pip install"):
    configuration.validate(c)
