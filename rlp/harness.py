"""This project's models as an lm-evaluation-harness backend ("rlp"): log-likelihoods, rolling
log-likelihoods and greedy generation on the jitted Flax model, for anything `rlp-eval` loads (a
run's workdir, an HF directory, a GGUF file, "smollm2"); batched and data-parallel over every
device JAX sees (params replicated, each batch split over the mesh's data axis).

  rlp-eval harness --model=PATH --tasks=NAMES [--include_path=DIR] [--num_fewshot=N] ...
  rlp-lm-eval --model=rlp --model_args=path=PATH --tasks=NAMES ...   # the harness's own CLI

Tokenization and scoring follow the harness's HF backend (its TemplateLM: trailing spaces of a
context move to the continuation; a causal model encodes context + continuation and splits), so
the figures compare with `--model=hf` on the same weights. think=True lets the model write a
thought first, in the run's thought format: the thought is generated greedily after the context
(up to thought_len tokens, ended at any closer tokenization or by appending the closer), then the
continuation is scored, or the answer generated, after it.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
import lm_eval.models  # noqa: F401  (the harness's own models registered before ours)
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
import yaml

from models import generate as generation
from rlp import corpora
from rlp import evaluate
from rlp import sharding
from rlp.thought_format import thought_format

BUCKET = 32  # padded lengths are multiples of this: one compiled program per bucket


# Task suites by name (`rlp-eval harness / table --tasks=offline` or `paper`; the default, "auto",
# is `offline` on CPU and `paper` on accelerators).
# offline: the local tasks written by local_tasks_dir (no download), OFFLINE_LIMIT problems each
#   unless --limit says otherwise: SmolLM2-135M takes about 9 minutes on 2 CPU cores for the three
#   tasks plus the held-out NLL (docs/performance.md).
# paper: the paper's benchmarks as lm-evaluation-harness 0.4 names them (greedy; the harness
#   downloads their data). AMC23 has no harness task (add it with --include_path); the paper
#   averages 8 samples for pass@1 on math, these tasks score one greedy answer.
OFFLINE_TASKS = ("rlp_gsm_symbolic", "rlp_gsm_symbolic_mc", "rlp_digit_sums_mc")
OFFLINE_LIMIT = 100
PAPER_TASKS = ("gsm8k", "minerva_math500", "minerva_math", "aime25", "mmlu", "mmlu_pro",
               "gpqa_diamond_n_shot")
SUITES = {"offline": OFFLINE_TASKS, "paper": PAPER_TASKS}


def resolve_tasks(names, limit=None, backend: str | None = None):
  """(task names, limit, what was chosen) for --tasks / --limit: `auto` is the offline suite on
  CPU and the paper's on an accelerator; a suite name expands to its tasks; the offline suite
  takes OFFLINE_LIMIT problems per task unless a limit is given (None: every problem)."""
  names = list(names or ["auto"])
  backend = backend or jax.default_backend()
  out, chose = [], []
  for name in names:
    if name == "auto":
      name = "offline" if backend == "cpu" else "paper"
      chose.append(f"auto -> {name} (backend {backend})")
    if name in SUITES:
      out += [t for t in SUITES[name] if t not in out]
      if name == "offline" and limit is None:
        limit = OFFLINE_LIMIT
        chose.append(f"offline suite: {OFFLINE_LIMIT} problems per task (--limit to change)")
    elif name not in out:
      out.append(name)
  return out, limit, "; ".join(chose)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _token_scores(graphdef, params, tokens):
  """log p(tokens[:, i + 1] | tokens[:, :i + 1]) and whether it is the argmax, [B, S - 1]."""
  logits = nnx.merge(graphdef, params)(tokens)[:, :-1].astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, -1)
  tgt = tokens[:, 1:]
  return (jnp.take_along_axis(logp, tgt[..., None], -1)[..., 0], logits.argmax(-1) == tgt)


def _bucket(n: int) -> int:
  return -(-n // BUCKET) * BUCKET


@register_model("rlp")
class RLPLM(TemplateLM):
  """The harness's LM interface over a model `rlp-eval` loads (`path`)."""

  def __init__(self, path: str = "smollm2", batch_size: int | str | None = 8,
               max_length: int | None = None, max_gen_toks: int = 256, think: bool = False,
               thought_len: int = 32, use_ema: bool = False, device: str | None = None,
               max_batch_size: int | None = None, **kwargs):
    super().__init__()
    del max_batch_size  # the harness's; batches here are batch_size sequences
    if kwargs:
      raise evaluate.EvalError(f"the rlp model takes path, max_length, max_gen_toks, think, "
                               f"thought_len, use_ema (and the harness's --batch_size); got "
                               f"{sorted(kwargs)}")
    if device not in (None, "cpu", "cuda", "tpu") and not str(device).startswith("cuda"):
      raise evaluate.EvalError(f"--device={device}: the rlp model runs where JAX runs "
                               "(JAX_PLATFORMS), one of cpu / cuda / tpu or none")
    self.model, self.tok, self.desc = evaluate.load_for_eval(path, bool(use_ema))
    self.desc.pop("config", None)
    self.graphdef, self.params = nnx.split(self.model)
    self.batch_size = 8 if batch_size in (None, "auto") else int(str(batch_size).split(":")[0])
    # Data-parallel over every device: params replicated, each batch split over the mesh's data
    # axis (its size rounded up to a multiple of the device count).
    self.mesh = sharding.make_mesh((-1, 1, 1)) if jax.device_count() > 1 else None
    if self.mesh is not None:
      n = self.mesh.size
      self.batch_size = -(-self.batch_size // n) * n
      self.params = jax.device_put(self.params, NamedSharding(self.mesh, P()))
    self._max_length = int(max_length or min(self.model.config.max_seq_len, 2048))
    self.max_gen_toks = int(max_gen_toks)
    self.think = think if isinstance(think, bool) else str(think).lower() == "true"
    self.thought_len = int(thought_len)
    self.fmt = thought_format(self.tok)

  def _put(self, arr: np.ndarray):
    """A batch on the devices: split over the data axis when there are several."""
    if self.mesh is None:
      return jnp.asarray(arr)
    return jax.device_put(arr, sharding.batch_sharding(self.mesh, arr.ndim))

  # ---------------------------------------------------------------- tokens
  @property
  def eot_token_id(self) -> int:
    return int(self.tok.eos_id if self.tok.eos_id is not None else 0)

  @property
  def prefix_token_id(self) -> int:
    return int(self.tok.bos_id if self.tok.bos_id is not None else self.eot_token_id)

  @property
  def max_length(self) -> int:
    return self._max_length

  def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
    """As the HF backend: the tokenizer's own BOS rule by default (add_special_tokens None),
    never BOS when False, always when True."""
    ids = self.tok.encode(string)
    bos = self.tok.add_bos if add_special_tokens is None else bool(add_special_tokens)
    if bos and self.tok.bos_id is not None and ids[:1] != [self.tok.bos_id]:
      ids = [int(self.tok.bos_id)] + ids
    return ids

  def tok_decode(self, ids) -> str:
    return self.tok.decode(list(ids))

  # ---------------------------------------------------------------- scoring
  def _score(self, seqs: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(log-probs, greedy flags) of each sequence's tokens 1.. given the ones before."""
    out = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    for i in range(0, len(order), self.batch_size):
      idx = order[i:i + self.batch_size]
      width = _bucket(max(len(seqs[j]) for j in idx))
      toks = np.zeros((self.batch_size, width), np.int32)
      for r, j in enumerate(idx):
        toks[r, :len(seqs[j])] = seqs[j]
      lp, greedy = jax.device_get(_token_scores(self.graphdef, self.params, self._put(toks)))
      for r, j in enumerate(idx):
        n = len(seqs[j]) - 1
        out[j] = (lp[r, :n], greedy[r, :n])
    return out

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
    """The HF backend's truncation: the last max_length + 1 tokens of context + continuation,
    the continuation's tokens scored."""
    seqs, conts = [], []
    for _, context_enc, continuation_enc in requests:
      ctx = self._with_thought(context_enc) if self.think else list(context_enc)
      seqs.append((ctx + list(continuation_enc))[-(self.max_length + 1):])
      conts.append(len(continuation_enc))
    res = []
    for (lp, greedy), n in zip(self._score(seqs), conts):
      res.append((float(lp[-n:].sum()), bool(greedy[-n:].all())))
    for (key, _, _), r in zip(requests, res):
      self.cache_hook.add_partial("loglikelihood", key, r)
    return res

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    """Each document's log-likelihood in windows of max_length (every token scored once, with as
    much context as fits), after the prefix token, as the harness defines it."""
    out = []
    for req in requests:
      (string,) = req.args
      windows = list(map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
          token_list=self.tok_encode(string, add_special_tokens=False),
          prefix_token=self.prefix_token_id, max_seq_len=self.max_length, context_len=1)))
      seqs = [list(ctx) + list(cont) for ctx, cont in windows]
      total = sum(float(lp[-len(cont):].sum())
                  for (lp, _), (_, cont) in zip(self._score(seqs), windows))
      self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
      out.append(total)
    return out

  # ---------------------------------------------------------------- generation
  def _greedy(self, prompts: list[list[int]], steps: int) -> list[list[int]]:
    """`steps` greedy tokens after each prompt (left-padded batches through the KV cache)."""
    out = []
    for i in range(0, len(prompts), self.batch_size):
      chunk = prompts[i:i + self.batch_size]
      filler = [[self.eot_token_id]] * (self.batch_size - len(chunk))  # a full batch: one shape
      arr, pad = generation.left_pad(chunk + filler, width=_bucket(max(len(p) for p in chunk)))
      got = np.asarray(generation.decode_tokens(self.graphdef, self.params, self._put(arr),
                                              self._put(pad), jax.random.key(0), steps))
      out.extend(row.tolist() for row in got[:len(chunk)])
    return out

  def _with_thought(self, context_enc, thought=None) -> list[int]:
    """context + <think> + a greedy thought (cut at its first closer) + </think>."""
    prompt = list(context_enc) + list(self.fmt.prompt_ids)
    if thought is None:
      thought = self._greedy([prompt[-(self.max_length - self.thought_len - 4):]],
                             self.thought_len)[0]
    return prompt + self._until_closer(thought) + list(self.fmt.close_ids)

  def _until_closer(self, ids: list[int]) -> list[int]:
    closers = [list(self.fmt.close_ids)] + [list(c) for c in self.fmt.close_alts]
    for n in range(len(ids)):
      if any(ids[n:n + len(c)] == c for c in closers):
        return ids[:n]
    return ids

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """Greedy generation up to the first of `until` (and the end-of-text token), at most
    max_gen_toks tokens; a request asking to sample is refused (greedy is what is compared)."""
    out = [None] * len(requests)
    groups = {}
    for i, req in enumerate(requests):
      context, kw = req.args
      kw = dict(kw or {})
      if kw.get("do_sample") and float(kw.get("temperature", 1.0)) > 0:
        raise evaluate.EvalError("the rlp harness backend generates greedily; set the task's "
                                 "do_sample: false (or temperature 0)")
      until = kw.get("until") or []
      until = [until] if isinstance(until, str) else list(until)
      steps = int(kw.get("max_gen_toks", self.max_gen_toks))
      groups.setdefault(steps, []).append((i, context, until))
    for steps, items in groups.items():
      keep = self.max_length - steps - (self.thought_len + 8 if self.think else 0)
      prompts = [self.tok_encode(c)[-keep:] for _, c, _ in items]
      if self.think:
        thoughts = self._greedy([p + list(self.fmt.prompt_ids) for p in prompts], self.thought_len)
        prompts = [self._with_thought(p, th) for p, th in zip(prompts, thoughts)]
      for (i, context, until), gen in zip(items, self._greedy(prompts, steps)):
        if self.tok.eos_id is not None and self.tok.eos_id in gen:
          gen = gen[:gen.index(self.tok.eos_id)]
        text = self.tok_decode(gen)
        for term in until:
          if term:
            text = text.split(term)[0]
        out[i] = text
        self.cache_hook.add_partial("generate_until", (context, {"until": until}), text)
    return out


def local_tasks_dir(root: str | None = None) -> str:
  """Writes the offline task files (YAML + JSONL, generated from the shipped corpora with fixed
  seeds) into `root` (default: data/harness_tasks in the repository) and returns it; pass it to
  the harness as --include_path. Tasks: rlp_gsm_symbolic (generation, answer after '####'),
  rlp_gsm_symbolic_mc (the answer among four numbers, log-likelihood), rlp_digit_sums_mc (the
  testbed's chained digit sums, the answer digit among ten)."""
  root = root or os.path.join(corpora.DATA_DIR, "harness_tasks")
  os.makedirs(root, exist_ok=True)
  rng = np.random.default_rng(0)

  def write(name, rows):
    path = os.path.join(root, f"{name}.jsonl")
    with open(path, "w") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
    return path

  probs = corpora.reasoning_problems("eval", 200)
  shots = corpora.reasoning_problems("train", 8)
  qa = lambda ps: [{"question": p["question"], "answer": p["answer"],  # noqa: E731
                    "solution": p["solution"]} for p in ps]
  files = {"gsm_test": write("gsm_symbolic_test", qa(probs)),
           "gsm_train": write("gsm_symbolic_train", qa(shots)),
           "gsm_mc": write("gsm_symbolic_mc_test", _gsm_choices(probs, rng)),
           "digit_sums": write("digit_sums_test", _digit_sums(rng))}
  for name, spec in _task_specs(files).items():
    with open(os.path.join(root, f"{name}.yaml"), "w") as f:
      yaml.safe_dump({"task": name, "dataset_path": "json", "test_split": "test", **spec,
                      "metadata": {"version": 1.0}}, f, sort_keys=False)
  return root


def _gsm_choices(probs, rng) -> list[dict]:
  """Each problem's answer among three wrong numbers near it, in a seeded order."""
  rows = []
  for p in probs:
    ans = int(float(p["answer"]))
    wrong = set()
    while len(wrong) < 3:
      w = ans + int(rng.choice([-1, 1])) * int(rng.integers(1, max(4, abs(ans) // 2 + 2)))
      if w != ans:
        wrong.add(w)
    choices = [ans] + sorted(wrong)
    order = rng.permutation(4)
    rows.append({"question": p["question"], "choices": [str(choices[k]) for k in order],
                 "label": int(np.argmax(order == 0))})
  return rows


def _digit_sums(rng, n: int = 200) -> list[dict]:
  """The testbed's chained digit sums: the question, and the last digit of the sum."""
  rows = []
  for _ in range(n):
    digits = [int(x) for x in rng.integers(0, 10, corpora.TOY_OPS)]
    rows.append({"question": "+".join(map(str, digits)) + "=", "label": sum(digits) % 10})
  return rows


def _task_specs(files: dict) -> dict:
  """The harness's task definitions over the written files."""
  metrics = lambda *names: [{"metric": n, "aggregation": "mean", "higher_is_better": True}  # noqa: E731
                            for n in names]
  return {
      "rlp_gsm_symbolic": {
          "dataset_kwargs": {"data_files": {"test": files["gsm_test"],
                                            "train": files["gsm_train"]}},
          "fewshot_split": "train", "output_type": "generate_until",
          "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": " {{solution}}",
          "generation_kwargs": {"until": ["\nQuestion:", "<|im_end|>"], "do_sample": False,
                                "max_gen_toks": 160},
          "filter_list": [{"name": "strict-match", "filter": [
              {"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
              {"function": "take_first"}]}],
          "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                           "ignore_case": True, "ignore_punctuation": False,
                           "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"]}]},
      "rlp_gsm_symbolic_mc": {
          "dataset_kwargs": {"data_files": {"test": files["gsm_mc"]}},
          "output_type": "multiple_choice",
          "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices}}",
          "doc_to_target": "{{label}}", "metric_list": metrics("acc", "acc_norm")},
      "rlp_digit_sums_mc": {
          "dataset_kwargs": {"data_files": {"test": files["digit_sums"]}},
          "output_type": "multiple_choice",
          "doc_to_text": "{{question}}", "doc_to_choice": [str(d) for d in range(10)],
          "doc_to_target": "{{label}}", "metric_list": metrics("acc")},
  }


def check_task_files(directory: str):
  """Every task YAML under `directory` parses (the harness skips a broken file with a log line,
  and its task then reads as unknown); tags such as !function are accepted unread."""

  class Loader(yaml.SafeLoader):
    pass

  Loader.add_multi_constructor("!", lambda loader, tag, node: None)
  for root, _, names in os.walk(directory):
    for name in sorted(names):
      if name.endswith((".yaml", ".yml")):
        path = os.path.join(root, name)
        try:
          with open(path) as f:
            got = yaml.load(f, Loader=Loader)
        except yaml.YAMLError as e:
          raise evaluate.EvalError(f"task file {path} does not parse: "
                                   f"{' '.join(str(e).split())}; fix the YAML or move it out of "
                                   "--include_path") from None
        if not isinstance(got, dict):
          raise evaluate.EvalError(f"task file {path} is not a mapping of task fields (task:, "
                                   "dataset_path:, ...); fix it or move it out of --include_path")
