# Two commands do all set-up: `make demo` (the main job on the toy world) and `make test`.
# Each creates or updates .venv from requirements.txt (torch pinned to the CPU build in the same install).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test test-experiments test-fast lint demo bench clean-runs smoke-sd table3-sd-smoke dist-check

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps open-clip-torch==3.3.0
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The FID references (clean-fid 0.1.35, torch-fidelity 0.4.0) as wheel files only: tests/test_fid_modes.py imports
# them from the wheels in a process of its own (installed, torch-fidelity without torchvision breaks torchmetrics).
REFWHEELS := $(VENV)/refwheels/.downloaded
$(REFWHEELS): $(STAMP)
	$(PY) -m pip download -q --disable-pip-version-check --no-deps -d $(VENV)/refwheels \
	  torch-fidelity==0.4.0 clean-fid==0.1.35
	touch $@

venv: $(STAMP) $(REFWHEELS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks scripts

# The suite CI runs (under 2 minutes on 2 cores) on two xdist workers, one torch thread each. The experiments'
# end-to-end resume checks (marker `experiment`, ~35 s of worker time) run in `make test-experiments`;
# test-fast also skips the tests marked slow.
test: lint $(REFWHEELS)
	$(PY) -m pytest -n 2 -m "not experiment"

test-experiments: $(STAMP) $(REFWHEELS)
	$(PY) -m pytest -n 2 -m experiment

test-fast: lint $(REFWHEELS)
	$(PY) -m pytest -n 2 -m "not slow and not experiment"

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

# Table 3 on the full-size random-weight SD 2.1 skeleton at 256 px, every stage its own `experiment table3
# only=<stage>` process with a couple of steps (not part of `make test`; ~1 h on one CPU thread, ~20 GB of RAM).
# Writes runs/table3-sd-smoke/stages.md and t3/nudity/report.md (random weights: the plumbing, not the numbers).
table3-sd-smoke: $(STAMP)
	env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) scripts/table3_sd_smoke.py

# The package as a user gets it (not part of `make test`; needs the package registry): build the wheel, install it
# with torch==2.13.0 in ONE pip command (so pip keeps the CPU torch) into a fresh build/dist-check/venv, check the
# toy world's model files are inside it, and run the CLI from a folder outside the repo (no source tree on the path).
DIST := build/dist-check
dist-check:  # no $(STAMP): the wheel is built with .venv's pip + setuptools, nothing is installed there
	rm -rf $(DIST) && mkdir -p $(DIST)/wheel $(DIST)/tree
	cp -r pyproject.toml README.md LICENSE src $(DIST)/tree/  # a copy: no egg-info lands in src/ (on .venv's path)
	find $(DIST)/tree -name __pycache__ -prune -exec rm -rf {} +
	$(PY) -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w $(DIST)/wheel $(DIST)/tree
	test "$$($(PY) -m zipfile -l $(DIST)/wheel/prunefit-*.whl | grep -c 'prunefit/toyworld/assets/')" -eq \
	     "$$(find src/prunefit/toyworld/assets -type f ! -name '.*' | wc -l)" || \
	     { echo "dist-check: the wheel lacks toy-world asset files"; exit 1; }
	$(PYTHON) -m venv $(DIST)/venv
	$(DIST)/venv/bin/pip install -q --disable-pip-version-check torch==2.13.0 $(DIST)/wheel/prunefit-*.whl
	$(DIST)/venv/bin/pip check
	set -e; venv=$$(realpath $(DIST)/venv); tmp=$$(mktemp -d); cd $$tmp; \
	  $$venv/bin/python -c "import prunefit, sys; p = prunefit.__file__; print('prunefit from', p); \
	    sys.exit(0 if p.startswith('$$venv/') else 'prunefit was not imported from the wheel')"; \
	  $$venv/bin/prunefit --help > /dev/null; \
	  $$venv/bin/prunefit generate -p "a red circle on a black background" -o $$tmp/gen sampler.steps=2; \
	  $$venv/bin/prunefit prune method=magnitude steps=2 eval_prompts=0 output_dir=$$tmp/mag; \
	  $$venv/bin/prunefit prune method=aptp steps=2 num_experts=2 batch_size=4 hypernet_pretrain_steps=1 \
	    eval_prompts=0 output_dir=$$tmp/aptp; \
	  rm -rf $$tmp; echo "dist-check: ok ($$(ls $(CURDIR)/$(DIST)/wheel))"
