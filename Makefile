# salad-ray: `make run` and `make test` set up whatever is missing, then do their job.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= local
DEB_PACKAGES := espeak-ng libsndfile1 fortunes dict-gcide chromium chromium-driver
# Ray on a laptop: no token auth, no usage reporting.
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: setup system venv assets run test lint format bench clean

setup: system venv assets

system:
	@tools/setup-system.sh $(DEB_PACKAGES)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml tools/constraints-cpu.txt tools/setup-venv.sh tools/en_core_web_sm_alias/pyproject.toml
	tools/setup-venv.sh $(VENV)
	@touch $@

# Offline model assets of the local preset (see salad_ray/assets.py); a no-op once cached.
assets: venv
	@$(PY) -m salad_ray.assets fetch --preset $(PRESET)

run: setup
	$(PY) -m salad_ray.run --preset $(PRESET) --run-dir runs/$(PRESET) --resume

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	@for b in $(wildcard benchmarks/*.py); do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
