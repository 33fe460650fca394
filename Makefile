# Two commands on a fresh machine:  `make run` (the main job) and `make test` (the suite).
# Both create .venv and install the pinned dependency set (constraints.txt pins torch to 2.13.0,
# the local CPU wheel) the first time.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SPEC   ?= search_spaces/grid.yaml
STAMP  := $(VENV)/.installed
S3_VENV  ?= .venv-s3
S3_STAMP := $(S3_VENV)/.installed
GCS_VENV  ?= .venv-gcs
GCS_STAMP := $(GCS_VENV)/.installed

.PHONY: install run smoke test test-fast lint browser s3-server gcs-server clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,cluster,download,mlflow,wandb]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m clear_tune.run $(SPEC)

smoke: $(STAMP)
	$(PY) -m clear_tune.run search_spaces/smoke.yaml

# Headless Chromium for the report tests (Debian's package; needs root, as on CI).
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The S3 server the storage tests start on 127.0.0.1 (moto), in a venv of its own: its pins (botocore,
# python-dateutil) conflict with the project's, and nothing of it is imported by the project.
s3-server: $(S3_STAMP)

$(S3_STAMP): tests/s3/constraints.txt
	$(PYTHON) -m venv $(S3_VENV)
	$(S3_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(S3_VENV)/bin/python -m pip install --quiet -c tests/s3/constraints.txt 'moto[server]'
	touch $(S3_STAMP)

# The GCS emulator the gs:// storage tests start on 127.0.0.1 (gcp-storage-emulator), in its own venv like the
# S3 server: only its server is run, nothing of it is imported by the project.
gcs-server: $(GCS_STAMP)

$(GCS_STAMP): tests/gcs/constraints.txt
	$(PYTHON) -m venv $(GCS_VENV)
	$(GCS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(GCS_VENV)/bin/python -m pip install --quiet -c tests/gcs/constraints.txt gcp-storage-emulator
	touch $(GCS_STAMP)

# The habits CI keeps: ruff (lint and format) and mypy on the package (pyproject.toml configures both).
lint: $(STAMP)
	$(VENV)/bin/ruff check clear_tune tests benchmarks examples
	$(VENV)/bin/ruff format --check clear_tune tests benchmarks examples
	$(VENV)/bin/mypy

# The whole suite: lint, then every test (doctests in clear_tune/ included), real Ray, servers and Chromium.
test: lint browser $(S3_STAMP) $(GCS_STAMP)
	$(PY) -m pytest -q

# The inner loop: no Ray, no browser, no servers (under 2 minutes on 2 cores).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not ray and not browser and not cluster and not slow"

clean:
	rm -rf $(VENV) $(S3_VENV) $(GCS_VENV) test-artifacts .pytest_cache
