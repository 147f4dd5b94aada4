# Two commands do all set-up: `make demo` (the main job on the toy world) and `make test`.
# Each creates or updates .venv from requirements.txt (torch pinned to the CPU build in the same install).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test test-fast lint demo bench clean-runs smoke-sd

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps open-clip-torch==3.3.0
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks scripts

# The full suite (what CI runs) on two xdist workers, one torch thread each; test-fast skips the tests marked slow.
test: lint
	$(PY) -m pytest -n 2

test-fast: lint
	$(PY) -m pytest -n 2 -m "not slow"

demo: $(STAMP)
	$(PY) scripts/demo.py

clean-runs:
	rm -rf runs/demo

bench: $(STAMP)
	$(PY) benchmarks/run.py

# Every command on full-size random-weight SD 1.5 and SD 2.1 pipelines at 256 px (not part of `make test`; ~1 h on
# one CPU thread, ~25 GB of disk in runs/). Writes runs/smoke-sd/smoke.md.
smoke-sd: $(STAMP)
	env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) scripts/smoke_sd.py --arch sd15 --arch sd21
