"""Where a decode step's time goes, per XLA operation (`rlp-bench sampler --profile`); the same
for one call of the update, the EMA scoring and the CPT step (`call_profile`, `rlp-bench rlp-step
--profile`).

The rollout runs under `jax.profiler.trace` at thought T and T // 2; XLA's per-operation events
(`hlo_op` in the trace) are summed per kind of operation, and the difference between the two
rollouts over the T - T // 2 extra tokens is the marginal cost of one decode step, the same
definition as `decode_step_seconds` (the prefill cancels). Each operation is named by the jax
operation that produced it (the compiled HLO's op_name metadata), so `source` points at the
model code: e.g. `.../while/body/closed_call/...d,df->...f/dot_general` is the MLP's gate or up
projection inside the layer scan.

On CPU, XLA emits per-operation events only with `--xla_cpu_enable_xprof_traceme=true` in
XLA_FLAGS at process start (`rlp-bench --profile` sets it); the events slow a CPU decode step
by 10-20%, so take timings from a run without it. The CPU runs independent operations
on several threads at once, so the operations' summed time can exceed the wall time
(`profile_ops_over_step`); the shares still say where the work is. On a GPU the kernels'
events carry the same `hlo_op` names; that path has not been run here (no GPU was available),
`bash bench/gpu_suite.sh OUT sampler` runs it.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile

import jax

TRACEME_FLAG = "--xla_cpu_enable_xprof_traceme=true"


def _is_matmul(name: str, source: str) -> bool:
  if source.endswith("dot_general"):
    return True  # XLA:CPU names its library matmuls ynn_fusion / dot; GPU ones gemm / cublas
  return bool(re.search(r"dot|gemm|cublas|ynn_fusion", name)) and "reduce" not in source


# kinds, tested in order on (instruction name, source op): the first that matches
_KINDS = (("matmul", _is_matmul),
          ("cache write",
           lambda n, s: "dynamic-update-slice" in n or s.endswith("dynamic_update_slice")),
          ("slice copy", lambda n, s: "slice" in n or s.endswith("slice")),
          ("layout copy",
           lambda n, s: n.startswith(("copy", "transpose")) or s.endswith("transpose")),
          ("reduction", lambda n, s: "reduce" in n or "/reduce_" in s or s.endswith("argmax")),
          ("elementwise/other", lambda n, s: True))


def kind_of(name: str, source: str) -> str:
  return next(k for k, match in _KINDS if match(name, source))


def hlo_sources(hlo_text: str) -> dict[str, str]:
  """Instruction name -> the jax op that produced it (op_name metadata), from compiled HLO text;
  a fusion without its own metadata takes the first op_name inside the computation it calls."""
  inside, current = {}, None
  out, calls = {}, {}
  for line in hlo_text.splitlines():
    head = re.match(r"^(?:ENTRY )?%([\w.\-]+) .*\{$", line)
    if head:
      current = head.group(1)
      continue
    m = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = ", line)
    if not m:
      continue
    src = re.search(r'op_name="([^"]*)"', line)
    if src:
      out[m.group(1)] = src.group(1)
      if current is not None:
        inside.setdefault(current, src.group(1))
    called = re.search(r"calls=%([\w.\-]+)", line)
    if called:
      calls[m.group(1)] = called.group(1)
  for name, comp in calls.items():
    if name not in out and comp in inside:
      out[name] = inside[comp]
  return out


# control flow: their events span the operations they run, which have events of their own
_CONTAINERS = re.compile(r"^(while|conditional|call|async-start|async-done)(\.\d+)?$")


def op_events(trace_dir: str) -> list[tuple[str, str, float]]:
  """(module, instruction, seconds) for every XLA operation event in a jax.profiler trace, less
  control flow (a while loop's event spans its body's operations)."""
  files = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
  if not files:
    raise RuntimeError(f"jax.profiler wrote no trace under {trace_dir}")
  events = json.load(gzip.open(files[0]))["traceEvents"]
  return [(e["args"].get("hlo_module", ""), e["args"]["hlo_op"], e["dur"] * 1e-6)
          for e in events if e.get("ph") == "X" and "hlo_op" in e.get("args", {})
          and not _CONTAINERS.match(e["args"]["hlo_op"])]


def _profiled(fn) -> list[tuple[str, str, float]]:
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      fn()
    return op_events(d)


def _traced_ops(fn, hlo_text: str):
  """({op name: [seconds, calls]}, {op name: source}) for one traced call of a warm `fn`."""
  ops = collections.defaultdict(lambda: [0.0, 0])
  for _, name, sec in _profiled(fn):
    ops[name][0] += sec
    ops[name][1] += 1
  if not ops:
    raise RuntimeError("the trace holds no XLA operation events; on CPU start the process with "
                       f"XLA_FLAGS={TRACEME_FLAG} (rlp-bench --profile sets it)")
  return ops, hlo_sources(hlo_text)


def _by_kind(ops, sources) -> collections.Counter:
  out = collections.Counter()
  for name, (sec, _) in ops.items():
    out[kind_of(name, sources.get(name, ""))] += sec
  return out


def _top_ops(ops, sources, top: int, per: str) -> list[dict]:
  total = sum(v[0] for v in ops.values())
  return [{"op": n, "kind": kind_of(n, sources.get(n, "")), "source": sources.get(n, ""),
           f"seconds_per_{per}": sec, f"calls_per_{per}": calls, "share_of_op_time": sec / total}
          for n, (sec, calls) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:top]]


def _kinds_report(per_kind: dict, seconds: float | None, by_kind: str, shares: str,
                  over: str) -> dict:
  per_kind = {k: max(v, 0.0) for k, v in sorted(per_kind.items(), key=lambda kv: -kv[1])}
  ops_sum = sum(per_kind.values())
  return {by_kind: per_kind,
          shares: {k: v / ops_sum for k, v in per_kind.items()} if ops_sum else {},
          over: ops_sum / seconds if seconds else None}


def call_profile(fn, hlo_text: str, *, name: str, seconds: float | None = None,
                 top: int = 8) -> dict:
  """Where one call of a warm, blocking `fn` (e.g. the RLP update or the CPT step) spends its
  time: the seconds of its XLA operations by kind, their shares, their sum over `seconds` (the
  call's measured wall time, when given) and the `top` operations with their sources. hlo_text:
  the compiled HLO text of what `fn` runs. Keys start with `profile_<name>_`."""
  fn()  # compiled and warm before the trace starts
  ops, sources = _traced_ops(fn, hlo_text)
  prefix = f"profile_{name}"
  return {**_kinds_report(_by_kind(ops, sources), seconds, f"{prefix}_seconds_by_kind",
                          f"{prefix}_kind_shares", f"{prefix}_ops_over_call"),
          f"{prefix}_top_ops": _top_ops(ops, sources, top, "call")}


def decode_profile(rollout_at, hlo_text_at, *, thought: int, step_seconds: float | None = None,
                   top: int = 12) -> dict:
  """rollout_at(T): a blocking callable that samples thoughts of exactly T tokens; hlo_text_at(T):
  the compiled HLO text of what it runs. Returns the seconds per decode step by kind of operation
  (the marginal between T and T // 2), their shares, their sum over `step_seconds` (the measured
  decode step, when given) and the `top` operations of the T rollout by time."""
  half = max(1, thought // 2)
  if half == thought:
    raise ValueError("the decode profile needs thought >= 2")
  runs = {}  # T -> ({op name: [seconds, calls]}, {op name: source})
  for t in (thought, half):
    fn = rollout_at(t)
    fn()  # compiled and warm before the trace starts
    runs[t] = _traced_ops(fn, hlo_text_at(t))
  steps = thought - half
  per_kind = _by_kind(*runs[thought])
  per_kind.subtract(_by_kind(*runs[half]))
  per_kind = {k: v / steps for k, v in per_kind.items()}
  return {"profile_thoughts": [thought, half],
          **_kinds_report(per_kind, step_seconds, "profile_step_seconds_by_kind",
                          "profile_kind_shares", "profile_ops_over_step"),
          "profile_top_ops": _top_ops(*runs[thought], top, "rollout")}
