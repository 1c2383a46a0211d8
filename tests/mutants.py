"""Mutation checks: the code broken on purpose, one edit at a time, and the test that must then
fail. They show that a test checks what its name promises (a test that still passes with its
feature broken checks nothing); `make test` does not run them (each is a pytest run of its own).

  python tests/mutants.py            # every mutant: apply, run its tests, restore
  python tests/mutants.py NAME ...   # only these
  python tests/mutants.py --list

A mutant that its tests do not kill is reported as SURVIVED and the command exits 1. The source
file is restored after every run (also on Ctrl-C). tests/test_mutants_apply.py checks that each
mutant's text still occurs exactly once in its file, so the list cannot rot silently."""

import dataclasses
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutant:
  name: str
  file: str
  old: str
  new: str
  tests: tuple[str, ...]


_SELECT = "cuts = top_positions(ent if selection == \"entropy\" else -lp, lengths_B, k, min_prefix)"
_T = "tests/rlp/test_trainer.py::"
MUTANTS = (
    Mutant("ntp_dropped", "rlp/policy.py", "loss = loss + cfg.ntp_weight * ntp",
           "loss = loss + 0.0 * ntp",
           (_T + "test_ntp_term_is_the_documents_next_token_loss_and_moves_the_update",)),
    Mutant("ntp_halved", "rlp/policy.py", "ntp = ntp * (1.0 if w is None else w[\"doc\"])",
           "ntp = 0.5 * ntp * (1.0 if w is None else w[\"doc\"])",
           (_T + "test_ntp_term_is_the_documents_next_token_loss_and_moves_the_update",)),
    Mutant("selection_uniform", "rlp/positions.py", _SELECT,
           "cuts = top_positions(jnp.zeros_like(lp), lengths_B, k, min_prefix)",
           (_T + "test_entropy_selection_picks_the_emas_most_uncertain_tokens",
            _T + "test_low_logp_selection_runs_and_scores_the_chosen_positions",
            "tests/rlp/test_thought_eval.py::test_scored_selection_picks_the_scoring_models_extremes")),
    Mutant("selection_swapped", "rlp/positions.py", _SELECT,
           "cuts = top_positions(-lp if selection == \"entropy\" else ent, lengths_B, k, min_prefix)",
           (_T + "test_entropy_selection_picks_the_emas_most_uncertain_tokens",
            "tests/rlp/test_thought_eval.py::test_scored_selection_picks_the_scoring_models_extremes")),
    Mutant("kl_k1_for_k3", "rlp/objective.py", "kl = jnp.exp(d) - d - 1.0", "kl = -d",
           (_T + "test_kl_term_is_the_k3_estimate_against_the_reference",)),
    Mutant("init_ignores_the_checkpoint", "rlp/loop.py", "params=got.state.params",
           "params=state.params",
           ("tests/launch/test_train.py::test_warmup_then_rlp_from_its_checkpoint",)),
    Mutant("surrogate_max", "rlp/objective.py", "per_token = -jnp.minimum(unclipped, clipped)",
           "per_token = -jnp.maximum(unclipped, clipped)",
           ("tests/rlp/test_objective.py::test_surrogate_hand_values_sequence_and_token",)),
    Mutant("surrogate_mean_length", "rlp/objective.py",
           "per_seq = (per_token * mask).sum(-1) / jnp.maximum(n_tok, 1.0)",
           "per_seq = (per_token * mask).sum(-1) / jnp.maximum(n_tok.mean(), 1.0)",
           ("tests/rlp/test_objective.py::test_surrogate_hand_values_sequence_and_token",)),
    Mutant("loss_scaled", "rlp/objective.py",
           "loss = (per_seq * has).sum() / jnp.maximum(has.sum(), 1.0)",
           "loss = (per_seq * has).sum() / jnp.maximum(has.sum() + 1.0, 1.0)",
           (_T + "test_regression_pin_one_step_metrics",)),
    Mutant("rewards_always_shuffled", "rlp/trainer.py", "if cfg.shuffle_rewards:", "if True:",
           (_T + "test_rlp_increases_information_gain_on_fixed_contexts",)),
    Mutant("no_ema_baseline_does_not_cancel", "rlp/policy.py",
           "else jnp.zeros(cuts.shape + (1,))", "else rollout.s_pred",
           (_T + "test_without_the_ema_forward_the_update_is_the_same",)),
    Mutant("no_ema_still_forwards", "rlp/trainer.py",
           "return self.objective == \"rlp\" and (self.compute_ema or self.scored_selection)",
           "return self.objective == \"rlp\"",
           (_T + "test_without_the_ema_forward_the_update_is_the_same",)),
    Mutant("decode_ratio_over_matmuls", "bench/common.py",
           "\"decode_over_bound\": step / bound[\"bound_seconds\"],",
           "\"decode_over_bound\": step / bound[\"bound_matmul_seconds\"],",
           ("tests/launch/test_bench.py::test_decode_bound_arithmetic",)),
    Mutant("heldout_nll_counts_a_pad", "rlp/evaluate.py",
           "mask = jnp.arange(tokens.shape[1] - 1)[None] < (lengths[:, None] - 1)",
           "mask = jnp.arange(tokens.shape[1] - 1)[None] < (lengths[:, None])",
           ("tests/rlp/test_evaluate.py::test_rlp_eval_cli_on_smollm2",)),
    Mutant("diversity_edit_is_distinct_2", "rlp/evaluate.py",
           "div[\"edit\"].append(answers.mean_pairwise_edit(toks))",
           "div[\"edit\"].append(answers.distinct_n(toks, 2))",
           ("tests/rlp/test_evaluate.py::test_tiny_model_end_to_end",)),
)


def check(m: Mutant) -> str | None:
  """None if m's text occurs exactly once in its file, else what is wrong."""
  with open(os.path.join(ROOT, m.file)) as f:
    n = f.read().count(m.old)
  return None if n == 1 else f"{m.name}: its text occurs {n} times in {m.file} (want 1)"


def run(m: Mutant) -> bool:
  """Applies m, runs its tests, restores the file; True if a test failed (the mutant is killed)."""
  bad = check(m)
  if bad:
    raise SystemExit(bad)
  path = os.path.join(ROOT, m.file)
  with open(path) as f:
    original = f.read()
  try:
    with open(path, "w") as f:
      f.write(original.replace(m.old, m.new))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=line",
                        *m.tests], cwd=ROOT, capture_output=True, text=True)
  finally:
    with open(path, "w") as f:
      f.write(original)
  lines = [line for line in r.stdout.splitlines() if line.startswith(("/", "E ", "FAILED"))]
  print(f"{'killed' if r.returncode == 1 else 'SURVIVED' if r.returncode == 0 else 'ERROR'}"
        f"  {m.name}  ({m.file})")
  for line in lines[:6]:
    print("    " + line[:300])
  sys.stdout.flush()
  return r.returncode == 1


def main(argv):
  if argv == ["--list"]:
    for m in MUTANTS:
      print(f"{m.name}: {m.file}: {m.old!r} -> {m.new!r}")
    return 0
  unknown = set(argv) - {m.name for m in MUTANTS}
  if unknown:
    print(f"unknown mutants {sorted(unknown)}; --list names them", file=sys.stderr)
    return 2
  chosen = [m for m in MUTANTS if not argv or m.name in argv]
  killed = [run(m) for m in chosen]
  print(f"{sum(killed)} of {len(chosen)} mutants killed")
  return 0 if all(killed) else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
