"""The collapse watch: entropy / thought-length ratios every step, one warning each."""

from rlp.watch import CollapseWatch


def test_ratios_every_step_and_one_warning_per_quantity():
  lines = []
  w = CollapseWatch(0.25, lines.append)
  entropies = [2.0, 1.0, 0.4, 0.3, 2.0]
  lengths = [10.0, 9.0, 9.0, 2.0, 1.0]
  rows = []
  for step, (e, n) in enumerate(zip(entropies, lengths), 1):
    host = {"rlp/entropy": e, "rlp/thought_len_mean": n}
    w(step, host)
    rows.append(host)
  assert [r["watch/entropy_ratio"] for r in rows] == [1.0, 0.5, 0.2, 0.15, 1.0]
  assert [r["watch/thought_len_ratio"] for r in rows] == [1.0, 0.9, 0.9, 0.2, 0.1]
  assert len(lines) == 2  # once for entropy (step 3), once for length (step 4)
  assert "rlp/entropy fell to 0.20" in lines[0] and "step 3" in lines[0]
  assert "rlp/thought_len_mean fell to 0.20" in lines[1] and "step 4" in lines[1]


def test_off_and_missing_metrics():
  lines = []
  host = {"rlp/entropy": 1.0}
  CollapseWatch(0.0, lines.append)(1, host)
  assert host == {"rlp/entropy": 1.0} and not lines  # frac 0: off
  w = CollapseWatch(0.5, lines.append)
  host = {"cpt/nll": 3.0}
  w(1, host)
  assert host == {"cpt/nll": 3.0} and not lines  # CPT steps have nothing to watch


def test_reference_reset_schedule_every_and_on_plateau():
  from rlp.watch import RefReset
  r = RefReset(every=4, patience=0, warm=2)
  assert [s for s in range(1, 15) if r.due(s)] == [6, 10, 14]  # every 4 steps after the warm-up
  r = RefReset(every=0, patience=2, warm=0)
  for gain in (0.1, 0.3, 0.2, 0.25):  # best 0.3, then two evals without a new best
    r.observe_eval({"eval/information_gain": gain})
  assert r.due(5) == "plateau" and r.due(6) is None  # once; the best starts over
  r.observe_eval({"eval/information_gain": -1.0})
  r.observe_eval({"eval/information_gain": -2.0})  # one eval without a new best
  saved = RefReset(0, 2, 0, r.state())  # the checkpointed state carries the count over
  assert saved.due(8) is None
  saved.observe_eval({"eval/information_gain": -3.0})
  assert saved.due(9) == "plateau"
