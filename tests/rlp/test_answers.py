"""Answers and samples: the pass@k estimator, answer extraction, problem files, diversity."""

import itertools
import math

import numpy as np
import pytest

from rlp import answers


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 5, 3), (10, 3, 1), (10, 3, 4), (8, 2, 8),
                                   (6, 1, 2), (20, 7, 5)])
def test_pass_at_k_equals_exact_combinatorics(n, c, k):
  # probability that a uniformly drawn k-subset of the n samples holds a correct one
  subsets = list(itertools.combinations(range(n), k))
  exact = sum(any(i < c for i in s) for s in subsets) / len(subsets)
  assert abs(answers.pass_at_k(n, c, k) - exact) < 1e-12
  assert abs(answers.pass_at_k(n, c, k) - (1 - math.comb(n - c, k) / math.comb(n, k))) < 1e-12


def test_pass_at_k_rejects_bad_input():
  with pytest.raises(answers.EvalError, match="at least 8 samples"):
    answers.pass_at_k(4, 1, 8)
  with pytest.raises(answers.EvalError):
    answers.pass_at_k(4, 5, 1)


@pytest.mark.parametrize("text,want,fallback", [
    # explicit forms: what counts by default
    ("so 12 + 3 = 15\n#### 15", "15", "15"),
    ("#### 1,234", "1234", "1234"),
    ("#### -5", "-5", "-5"),
    ("The answer is \\boxed{-7}.", "-7", "-7"),
    ("The answer is 5. Then 2019 was a year", "5", "5"),
    ("so the final answer is: $3.50", "3.5", "3.5"),
    ("#### 7 \n then 99 more text", "7", "7"),
    # no explicit form: nothing by default, the last number only with the fallback
    ("costs $3.50 in total", None, "3.5"),
    ("she ends with 42 apples.", None, "42"),
    ("about -0.25 meters", None, "-0.25"),
    ("first 3, then 4, finally 12 dollars", None, "12"),
    ("12 - 4", None, "4"),  # an expression, not the number -4
    ("12-4", None, "4"),
    ("no number here", None, None),
    ("", None, None),
])
def test_answer_extraction(text, want, fallback):
  assert answers.extract_answer(text) == want
  assert answers.extract_answer(text, fallback=True) == fallback


def test_answers_match_numerically():
  assert answers.answers_match("1234", "1,234") and answers.answers_match("3.5", "3.50")
  assert answers.answers_match("-7", "-7") and not answers.answers_match("7", "-7")
  assert not answers.answers_match(None, "3")


def test_problem_file_errors_name_the_line(tmp_path):
  p = tmp_path / "p.jsonl"
  p.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
  with pytest.raises(answers.EvalError, match=r"p.jsonl:2 has no 'answer' field"):
    answers.load_problems(str(p))
  p.write_text('{"question": "1+1?", "answer": "2"}\nnot json\n')
  with pytest.raises(answers.EvalError, match=r"p.jsonl:2 is not valid JSON"):
    answers.load_problems(str(p))
  p.write_text('{"question": "1+1?", "answer": 2}\n')
  assert answers.load_problems(str(p)) == [{"question": "1+1?", "answer": "2"}]


def test_diversity_measures():
  same = [[1, 2, 3, 4]] * 3
  varied = [[1, 2, 3, 4], [5, 6, 7, 8], [1, 9, 3, 9]]
  assert answers.distinct_n(same, 2) == pytest.approx(3 / 9)
  assert answers.distinct_n(varied, 1) > answers.distinct_n(same, 1)
  assert answers.mean_pairwise_edit(same) == 0.0
  assert answers.mean_pairwise_edit([[1, 2, 3], [1, 2, 4]]) == pytest.approx(1 / 3)
  assert answers.unigram_entropy(same) == pytest.approx(np.log(4))


@pytest.mark.parametrize("text,gold,want", [
    ("so she has 18 left\n#### 18", "18", (True, "explicit")),
    ("#### 0.5", "1/2", (True, "explicit")),  # as mathematics, not as strings
    ("The answer is \\boxed{\\frac{1}{2}}.", "0.5", (True, "explicit")),
    ("#### 1,000", "1000", (True, "explicit")),
    ("#### -7", "7", (False, "explicit")),
    ("she ends with 42 apples", "42", (False, "none")),  # no explicit answer: not credited
])
def test_check_answer_says_which_rule_scored(text, gold, want):
  assert answers.check_answer(text, gold) == want


def test_check_answer_fallback_is_the_last_number():
  assert answers.check_answer("first 3, then 42 apples", "42", fallback=True) == (True, "last_number")
  assert answers.check_answer("no number", "42", fallback=True) == (False, "none")
