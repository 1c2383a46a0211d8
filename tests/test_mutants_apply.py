"""The mutation list (tests/mutants.py) still fits the code: each mutant's text occurs exactly once
in its file and names tests that exist, so `python tests/mutants.py` breaks what it says it
breaks. (Running the mutants is not part of `make test`: each is a pytest run of its own.)"""

import ast
import os

import mutants


def test_each_mutant_applies_once_and_names_existing_tests():
  assert len({m.name for m in mutants.MUTANTS}) == len(mutants.MUTANTS)
  assert [mutants.check(m) for m in mutants.MUTANTS] == [None] * len(mutants.MUTANTS)
  for m in mutants.MUTANTS:
    assert m.old != m.new, m.name
    for t in m.tests:
      path, name = t.split("::")
      tree = ast.parse(open(os.path.join(mutants.ROOT, path)).read())
      assert name in {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}, (m.name, t)
