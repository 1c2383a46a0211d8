"""rlp-bench on the tiny random model: each command's last line is one JSON object with the keys
benchmark spec names (the figures themselves are reported, never asserted)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import xla_flags_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _one_device_env():
  """The suite's environment for a bench command: one CPU device, the suite's other XLA flags."""
  return dict(os.environ, XLA_FLAGS=xla_flags_for(None), JAX_PLATFORMS="cpu")


def _bench(*args):
  env = _one_device_env()
  out = subprocess.run([sys.executable, "-m", "launch.bench", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_model_and_peak():
  r = _bench("model", "--model=tiny", "--iters=1", "--remat=dots", "--loss_chunk=64")
  for k in ("tokens_per_sec", "mfu", "step_seconds", "flops_per_token", "peak_flops"):
    assert r[k] > 0, k
  assert r["remat"] == "dots" and r["loss_chunk"] == 64 and r["platform"] == "cpu"
  p = _bench("peak")
  assert p["measured_float32_flops"] > 0 and p["peak_flops"] == p["measured_float32_flops"]


def test_the_cpu_peak_counts_every_device_a_step_uses():
  """MFU's CPU denominator: all local devices multiply at once, as a step on a mesh over them
  does (one fake CPU device alone measured less than the host gives all of them, and notebook 03
  showed an MFU of 1.2); the source string says how many devices were measured."""
  import jax
  from rlp import metrics
  assert jax.local_device_count() == 8  # tests/conftest.py
  a, _ = metrics._peak_operands(32, "float32", 0, jax.local_devices())
  assert a.shape == (8, 32, 32)
  assert {s.device for s in a.addressable_shards} == set(jax.local_devices())
  peak, src = metrics.device_peak_flops("float32")
  assert peak == metrics.measured_peak_flops("float32") > 0
  assert src == "measured matmul, 8 cpu device(s) at once"
  # a run on a mesh over 2 of the 8 devices divides by those 2, whatever mesh is set
  with jax.set_mesh(jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("x",))):
    two, src2 = metrics.device_peak_flops("float32", devices=jax.devices()[:2])
  assert src2 == "measured matmul, 2 cpu device(s) at once" and two > 0


@pytest.mark.slow
def test_rlp_step_with_peer():
  pytest.importorskip("torch")
  r = _bench("rlp-step", "--model=tiny", "--iters=1", "--peer", "--contexts=2", "--context_len=64",
             "--thought=16", "--profile")
  for k in ("step_seconds", "rollout_seconds", "score_seconds", "update_seconds", "rlp_over_cpt",
            "peer_step_seconds", "speedup_vs_peer", "bound_seconds"):
    assert r[k] > 0, k
  assert r["decode_layers"] == "unroll"  # auto on CPU
  # the decode step is the marginal time between thoughts of 16 and 8 tokens: on the tiny model
  # (~0.4 ms a step) one timing can come out 0 (clipped), so its value is not checked here (its
  # arithmetic is test_decode_bound_arithmetic's), only that the ratio is of these two figures
  assert r["decode_step_seconds"] >= 0
  assert r["decode_over_bound"] == pytest.approx(r["decode_step_seconds"] / r["bound_seconds"])
  # --profile: the update, the EMA scoring and the CPT step by kind of XLA operation; the update
  # and the CPT step differentiate through the model, so both hold matmuls from a jvp transpose
  for part in ("update", "score", "cpt"):
    kinds = r[f"profile_{part}_seconds_by_kind"]
    assert kinds["matmul"] > 0 and all(v >= 0 for v in kinds.values()), (part, kinds)
    assert sum(r[f"profile_{part}_kind_shares"].values()) == pytest.approx(1.0)
    assert r[f"profile_{part}_ops_over_call"] > 0
    assert 0 < len(r[f"profile_{part}_top_ops"]) <= 8
  for part in ("update", "cpt"):
    assert any("transpose(jvp(" in o["source"] for o in r[f"profile_{part}_top_ops"]), part


@pytest.mark.parametrize("args,says", [
    (["nope"], "usage: rlp-bench"),
    (["sampler", "--dtype=int8"], "--dtype=int8: value should be one of"),
    (["model", "--remat=sometimes"], "--remat=sometimes: value should be one of"),
    (["sampler", "--thought=1"], "--thought=1: 1 is not integer >= 2"),
    (["rlp-step", "--group=1"], "--group=1: an RLP step needs G >= 2"),
    (["rlp-step", "--contexts=3", "--grad_accum=2"], "--grad_accum=2 must divide --contexts=3"),
    (["memory", "--config=configs/tiny.py", "--devices=0"], "--devices=0: 0 is not a positive"),
    (["memory", "--config=configs/tiny.py", "--device_memory_gb=-1"], "must be > 0"),
    (["model", "--profile"], "--profile goes with the sampler or rlp-step command"),
    (["sampler", "--decode_layers=fast"], "--decode_layers=fast: value should be one of"),
])
def test_bad_commands_and_flags_are_one_line_usage_errors(args, says):
  env = _one_device_env()
  out = subprocess.run([sys.executable, "-m", "launch.bench", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2 and says in out.stderr, out.stderr[-1000:]
  assert "Traceback" not in out.stderr


def test_decode_bound_arithmetic(monkeypatch):
  """decode_over_bound: the marginal step time between thoughts of T and T/2 over the larger of
  the memory time (weights + needed KV cache at the bandwidth) and the matmul time."""
  import jax
  from flax import nnx
  import models
  from bench import common
  from rlp import metrics
  cfg = models.ModelConfig(vocab_size=100, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1,
                           head_dim=8, d_ff=32)
  b = common.decode_step_bound(cfg, streams=4, kv_tokens=50, attended=20, weight_bytes=1000,
                                kv_value_bytes=4, flops_rate=1e6, bandwidth=1e4)
  kv = 2 * 2 * 1 * 8 * 4 * 50
  n = cfg.num_params(include_embedding=False) + 100 * 16
  flops = 4 * (2 * n + 4 * 2 * 2 * 8 * 20)
  assert b["bound_kv_bytes"] == kv and b["bound_flops"] == flops
  assert b["bound_memory_seconds"] == (1000 + kv) / 1e4 and b["bound_matmul_seconds"] == flops / 1e6
  assert b["bound_seconds"] == max((1000 + kv) / 1e4, flops / 1e6)
  assert b["bound_by"] == ("memory" if (1000 + kv) / 1e4 >= flops / 1e6 else "matmul")
  model = models.Transformer(cfg, rngs=nnx.Rngs(0))
  monkeypatch.setattr(common, "alternate", lambda fns, rounds: {"full": 3.0, "half": 1.0})
  monkeypatch.setattr(metrics, "measured_peak_flops", lambda dtype: 1e6)
  monkeypatch.setattr(common, "measured_bandwidth", lambda: 1e4)
  monkeypatch.setattr(common, "decode_matmuls_seconds",
                      lambda c, streams, dtype, iters, unroll: 0.25)
  calls = []
  got = common.decode_over_bound(model, lambda t: (lambda: calls.append(t)), thought=8, streams=4,
                                 prefix_kv_tokens=10, mean_prefix=5, dtype="float32", iters=1)
  assert calls == [8, 4]  # each length run once before timing
  assert got["decode_step_seconds"] == 2.0 / 4  # (3 s - 1 s) over the 4 extra tokens
  weights = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  want = common.decode_step_bound(cfg, streams=4, kv_tokens=10 + 4 * 6, attended=5 + 6,
                                   weight_bytes=weights, kv_value_bytes=4, flops_rate=1e6,
                                   bandwidth=1e4)
  assert got["bound_seconds"] == want["bound_seconds"]
  assert got["decode_over_bound"] == 0.5 / want["bound_seconds"]
  assert got["decode_matmuls_seconds"] == 0.25 and got["decode_over_matmuls"] == 0.5 / 0.25
  assert got["decode_matmuls_over_bound"] == 0.25 / want["bound_seconds"]


def test_decode_matmuls_are_the_bounds_matmuls():
  """The timed matmul floor runs the same weight matmuls the bound counts: the dot_generals in its
  program (the layer scan's body times its length) are 2 x streams x (the non-embedding matmul
  weights + the LM head) FLOPs."""
  import math
  import jax
  import models
  from bench import common
  cfg = models.ModelConfig(vocab_size=512, d_model=64, n_layers=3, n_heads=4, n_kv_heads=2,
                           head_dim=16, d_ff=160)

  def dot_flops(jaxpr):
    total = 0
    for e in jaxpr.eqns:
      if e.primitive.name == "dot_general":
        (contract, _), _ = e.params["dimension_numbers"]
        lhs = e.invars[0].aval.shape
        total += 2 * math.prod(e.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
      for p in e.params.values():
        inner = getattr(p, "jaxpr", None)
        if inner is not None:
          total += dot_flops(inner) * (e.params["length"] if e.primitive.name == "scan" else 1)
    return total

  matmul_weights = cfg.num_params(include_embedding=False) - (2 * cfg.n_layers + 1) * 64  # norms
  outs = []
  for unroll in (False, True):  # the layer scan, and the unrolled layers of the CPU decode loop
    step, args = common.decode_matmuls_fn(cfg, 8, "float32", unroll)
    flops = dot_flops(jax.make_jaxpr(step)(*args).jaxpr)
    assert flops == 2 * 8 * (matmul_weights + 512 * 64), unroll
    outs.append(np.asarray(step(*args)))
  assert outs[0].shape == (8, 512)
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)  # the same weights either way
  assert common.decode_matmuls_seconds(cfg, 8, "float32", 1, unroll=True) > 0


def test_memory_plan_parts_and_checks(tmp_path):
  """rlp-bench memory: the state parts equal the train state's bytes, sharding divides them, the
  rollout chunk divides the KV caches, grad_accum the update, the estimate is printed beside the
  compiled program's own figure (--check), and bad input is one line (exit 2)."""
  import jax
  from bench import memory
  from configs import tiny, qwen3_1p7b_rlp
  c = tiny.get_config()
  c.mesh.data = 1
  one = memory.run(c, n_devices=1, device_memory_gb=1.0, check=False)
  from flax import nnx
  import models
  from rlp import configuration, trainer
  state = trainer.init_state(models.Transformer(configuration.model_config(c), rngs=nnx.Rngs(0)),
                             configuration.optimizer(c))
  nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree)) / memory.GiB  # noqa: E731
  assert one["params_gib"] == nbytes(state.params) and one["ema_gib"] == nbytes(state.ema)
  assert one["optimizer_gib"] == nbytes(state.opt_state) and one["reference_gib"] == 0
  assert one["fits"] and one["device_memory_gib"] == 1.0
  # on CPU the unrolled decode loop holds its own per-layer copy of the layers' weights
  mc = configuration.model_config(c)
  layer_bytes = nbytes(state.params["layers"])
  assert layer_bytes == (mc.num_params(include_embedding=False) - mc.d_model) * 4 / memory.GiB
  assert one["decode_layer_weights_gib"] == layer_bytes
  assert one["total_gib"] == pytest.approx(
      one["state_gib"] + layer_bytes + max(one["rollout_gib"], one["update_gib"]))
  assert "decode_layer_weights_gib" not in memory.run(c, n_devices=1, platform="gpu")
  c.rlp.rollout_batch = 2
  c.rlp.grad_accum = 4
  chunked = memory.run(c, n_devices=1)
  assert chunked["rollout_thought_kv_gib"] == one["rollout_thought_kv_gib"] / 4
  assert chunked["update_activations_gib"] < one["update_activations_gib"] / 3
  # one prefix forward for rollout and update keeps its residuals through the rollout; a chunked
  # rollout (or several micro-batches) computes the prefix twice and keeps nothing
  assert 0 < one["rollout_prefix_residuals_gib"] < one["update_activations_gib"]
  assert "rollout_prefix_residuals_gib" not in chunked
  c.mesh.fsdp = 2
  c.rlp.rollout_batch = 0
  sharded = memory.run(c, n_devices=2)
  assert sharded["mesh"] == {"data": 1, "fsdp": 2, "tensor": 1}
  assert sharded["contexts_per_device"] == 4 and sharded["optimizer_gib"] < one["optimizer_gib"]
  c = tiny.get_config()
  c.mesh.data = -1
  checked = memory.run(c, check=True)  # this machine's 8 fake devices
  assert checked["compiled_total_gib"] > 0 and 0.5 < checked["check_ratio"] < 2.0
  c.objective = "cpt"  # the CPT step compiles on its own batch (packed sequences)
  checked = memory.run(c, check=True)
  assert checked["compiled_total_gib"] > 0 and 0.5 < checked["check_ratio"] < 2.0
  # the configs' docstrings: the paper's Qwen3-1.7B step fits 32 x 80 GB by the estimate, with
  # chunked rollouts and the head in chunks; with the full thought logits it would not
  q = memory.run(qwen3_1p7b_rlp.get_config(), n_devices=32, device_memory_gb=80,
                 shape="qwen3-1.7b", platform="gpu")
  assert q["model_params"] > 1.7e9 and q["mesh"]["fsdp"] == 32 and q["fits"]
  assert q["loss_chunk"] == 256 and q["rollout_contexts_per_chunk"] == 4
  full = qwen3_1p7b_rlp.get_config()
  full.train.loss_chunk = 0
  assert not memory.run(full, n_devices=32, device_memory_gb=80, shape="qwen3-1.7b")["fits"]
  with pytest.raises(memory.MemoryPlanError, match="--model_shape=NAME"):
    memory.run(qwen3_1p7b_rlp.get_config(), n_devices=32)
  env = _one_device_env()
  r = subprocess.run([sys.executable, "-m", "launch.bench", "memory", "--config=configs/tiny.py",
                      "--model_shape=gpt5"], cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 2 and "--model_shape='gpt5': known shapes are" in r.stderr


def test_bench_shapes_include_the_papers_model():
  """`rlp-bench --model=qwen3-1.7b` (the RLP step at the paper's proportions on an accelerator)
  builds the memory plan's Qwen3-1.7B shape: its published size, 1.72B parameters of which 1.41B
  outside the (tied) embedding. Built abstractly: nothing is allocated."""
  sys.path.insert(0, ROOT)
  from bench import memory, model as bench_model
  from flax import nnx
  import models
  assert bench_model.SHAPES["qwen3-1.7b"] is memory.SHAPES["qwen3-1.7b"]
  abstract = nnx.eval_shape(lambda: bench_model.load("qwen3-1.7b", dtype="bfloat16"))
  assert abstract.config.dtype == "bfloat16" and abstract.config.qk_norm
  sizes = {"/".join(map(str, k)): v.size for k, v in nnx.to_flat_state(nnx.state(abstract))}
  total = sum(sizes.values())
  assert total == 1_720_574_976
  assert 1.40e9 < total - sizes["embed"] < 1.42e9 and not any("lm_head" in k for k in sizes)
  # a misspelt shape names the known ones (exit 2, one line), not a missing directory alone
  with pytest.raises(models.WeightsError, match=r"--model='qwen3-17b' is neither a shape \(tiny, "):
    bench_model.load("qwen3-17b")


def test_gpu_suite_commands_parse():
  """bench/gpu_suite.sh's commands (printed, not run, with PYTHON=echo) are valid rlp-bench
  command lines: a known command and flags rlp-bench defines, with values its checks accept.
  A GPU loan is short; a typo must not be found there."""
  import tempfile
  with tempfile.TemporaryDirectory() as out:
    r = subprocess.run(["bash", "bench/gpu_suite.sh", out, "targets", "paper", "peak", "model",
                        "peer", "rlp", "sampler"], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHON="echo"), timeout=60)
  assert r.returncode == 0, r.stderr
  lines = [ln.split(" -m launch.bench ", 1) for ln in r.stdout.splitlines() if " rc=0 " in ln]
  names = [name.split(":")[0] for name, _ in lines]
  assert names[:3] == ["sampler_smollm2_256", "model_llama1b_cudnn_dots_b8_c1024",
                       "rlp_qwen3_t512"] and "rlp_qwen3_t2048" in names
  # three runs twice: decode and mfu are also in the full set, paper512 in both groups
  assert len(names) == len(set(names)) + 3
  check = """
import json, sys
from absl import flags
from launch import bench
from bench.model import SHAPES
for name, cmd in json.loads(sys.argv[1]):
  flags.FLAGS.unparse_flags()
  argv = flags.FLAGS(["rlp-bench", *cmd.split()])
  assert len(argv) == 2 and argv[1] in bench.COMMANDS, (name, argv)
  f = flags.FLAGS
  assert argv[1] != "rlp-step" or (f.contexts % f.grad_accum == 0 and f.group >= 2), name
  assert f.model == "smollm2" or f.model in SHAPES, (name, f.model)
"""
  p = subprocess.run([sys.executable, "-c", check, json.dumps(lines)], cwd=ROOT,
                     capture_output=True, text=True, timeout=120, env=_one_device_env())
  assert p.returncode == 0, p.stderr[-1500:]


def test_long_thoughts_rows():
  """bench.long_thoughts: one row per length plus the whole-buffer comparison (a tiny model
  here), every thought run to its limit (a fixed count: streams x (limit + the 3-token closer))."""
  sys.path.insert(0, ROOT)
  from bench import long_thoughts
  from flax import nnx
  import models
  tiny = models.Transformer(models.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4,
                                               n_kv_heads=2, head_dim=8, d_ff=48),
                            rngs=nnx.Rngs(0))
  rows = long_thoughts.run([4], group=2, whole_buffer_too=True, model=tiny)
  assert [(r["thought"], r["attend_block"]) for r in rows] == [(4, 128), (4, 0)]
  for r in rows:
    assert r["thought_tokens"] == 2 * (r["thought"] + 3)
    assert r["tokens_per_sec"] > 0 and r["read_spans"] == [3 + r["thought"] + 3]


def test_sampler_decode_profile():
  """`rlp-bench sampler --profile`: the decode step split by kind of XLA operation, and the top
  operations named by the model code that made them."""
  r = _bench("sampler", "--model=tiny", "--iters=1", "--doc_len=64", "--positions=2", "--group=2",
             "--thought=16", "--profile", "--decode_layers=scan")
  assert r["decode_layers"] == "scan"  # the CPU's default is unrolled (rlp-step's test)
  # the split is a marginal between two timed rollouts: on the tiny model (well under 1 ms a step)
  # a kind can come out 0 (clipped), so only the signs are checked here; the arithmetic is
  # test_decode_profile_marginal_arithmetic's
  kinds = r["profile_step_seconds_by_kind"]
  assert set(kinds) <= {"matmul", "cache write", "slice copy", "layout copy", "reduction",
                        "elementwise/other"}
  assert all(v >= 0 and np.isfinite(v) for v in kinds.values()), kinds
  if sum(kinds.values()) > 0:
    assert sum(r["profile_kind_shares"].values()) == pytest.approx(1.0)
  assert r["profile_thoughts"] == [16, 8] and len(r["profile_top_ops"]) == 12
  ops = r["profile_top_ops"]
  assert all(not o["op"].startswith("while") for o in ops)  # loops are not counted twice
  # the matmuls are found in the trace and classified (on the tiny model, 2-D matmuls of a few
  # rows, they need not be among the top 12); the top operations are named by their jax ops
  # (an op XLA inserts without metadata, e.g. a copy, has no name: most must have one)
  assert "matmul" in kinds
  assert sum(o["source"].startswith("jit(") for o in ops) >= len(ops) // 2, ops
  # the layer scan inside the decode loop runs at least once per thought token (the prefill's
  # layer scan, one level of while, once per rollout)
  assert all(o["calls_per_rollout"] >= 16 for o in ops if "while/body/while/body/" in o["source"])


def test_decode_profile_marginal_arithmetic(monkeypatch):
  """Per kind: (time at T - time at T/2) / (T - T/2); the prefill's operations cancel."""
  from bench import profile
  def events(t):  # a prefill matmul, then per decode step one matmul and one layout copy
    return ([("m", "dot.1", 0.5)] + [("m", "dot.2", 0.010)] * t + [("m", "copy.3", 0.002)] * t)
  monkeypatch.setattr(profile, "_profiled", lambda fn: events(fn()))
  r = profile.decode_profile(lambda t: (lambda: t), lambda t: "", thought=8, step_seconds=0.024,
                             top=2)
  assert r["profile_thoughts"] == [8, 4]
  assert r["profile_step_seconds_by_kind"] == pytest.approx({"matmul": 0.010,
                                                            "layout copy": 0.002})
  assert r["profile_ops_over_step"] == pytest.approx(0.5)
  assert [o["op"] for o in r["profile_top_ops"]] == ["dot.1", "dot.2"]
  assert r["profile_top_ops"][1]["calls_per_rollout"] == 8


def test_call_profile_sums_one_call_per_kind(monkeypatch):
  from bench import profile
  calls = []
  events = [("m", "dot.1", 0.30), ("m", "dot.1", 0.10), ("m", "copy.2", 0.05),
            ("m", "add_fusion.3", 0.05)]
  monkeypatch.setattr(profile, "_profiled", lambda fn: (fn(), events)[1])
  r = profile.call_profile(lambda: calls.append(1), "", name="update", seconds=1.0, top=2)
  assert len(calls) == 2  # one warm-up call, then the traced one
  assert r["profile_update_seconds_by_kind"] == pytest.approx(
      {"matmul": 0.4, "layout copy": 0.05, "elementwise/other": 0.05})
  assert r["profile_update_kind_shares"]["matmul"] == pytest.approx(0.8)
  assert r["profile_update_ops_over_call"] == pytest.approx(0.5)
  top = r["profile_update_top_ops"]
  assert [o["op"] for o in top] == ["dot.1", "copy.2"] and top[0]["calls_per_call"] == 2
  assert top[0]["share_of_op_time"] == pytest.approx(0.8)


def test_profile_kinds_sources_and_missing_op_events(monkeypatch):
  import jax
  import jax.numpy as jnp
  from bench import profile
  f = jax.jit(lambda x: jnp.sin(x @ x))
  x = jnp.ones((8, 8))
  src = profile.hlo_sources(f.lower(x).compile().as_text())
  assert any(s.endswith("dot_general") for s in src.values()), src
  assert profile.kind_of("dot.3", "") == "matmul"
  assert profile.kind_of("dynamic-slice_bitcast_fusion.2",
                         "jit(f)/while/body/dynamic_slice") == "slice copy"
  assert profile.kind_of("copy.7", "") == "layout copy"
  assert profile.kind_of("ynn_fusion.9", "jit(f)/reduce_max") == "reduction"
  monkeypatch.setattr(profile, "op_events", lambda d: [])  # a process started without the flag
  with pytest.raises(RuntimeError, match="xla_cpu_enable_xprof_traceme"):
    profile.decode_profile(lambda t: lambda: jax.block_until_ready(f(x)),
                           lambda t: "", thought=4)


def test_position_split_counts_a_phrase_apart(tmp_path):
  """bench.position_split: a position is inside the phrase only when its token continues the
  phrase from the text before it; the gains are averaged per group; a report without records
  (an eval run without --per_position) is refused with the fix."""
  from bench import position_split as ps
  phrase = " Give the result."
  rec = lambda ctx, tgt, gain: {"context": ctx, "target_text": tgt, "gain": gain}
  records = [rec("How many?", "Give", 1.0),  # no: the phrase has " Give", with its space
             rec("How many?", " Give", 2.0), rec("many? Give the", " result", 4.0),
             rec("many? Give a", " result", -1.0),  # " result" after other words
             rec("", "", 5.0)]
  assert [ps.inside(r, phrase) for r in records] == [False, True, True, False, False]
  got = ps.split(records, phrase)
  assert got["inside"] == {"positions": 2, "information_gain": 3.0}
  assert got["outside"] == {"positions": 3, "information_gain": 5.0 / 3}
  assert got["all"]["positions"] == 5 and abs(got["all"]["information_gain"] - 2.2) < 1e-12
  (tmp_path / "r.json").write_text(json.dumps({"per_position": records}))
  out = subprocess.run([sys.executable, "-m", "bench.position_split", str(tmp_path / "r.json"),
                        f"--phrase={phrase}"], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0 and "inside   positions    2  information gain +3.00" in out.stdout
  (tmp_path / "plain.json").write_text(json.dumps({"eval/information_gain": 0.1}))
  out = subprocess.run([sys.executable, "-m", "bench.position_split", str(tmp_path / "plain.json")],
                       cwd=ROOT, capture_output=True, text=True)
  assert out.returncode != 0 and "--per_position" in out.stderr
