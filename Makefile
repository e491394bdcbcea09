# `make demo` and `make test` each create or reuse .venv at the repo root by themselves.
VENV ?= .venv
# the suite runs in this many pytest-xdist workers, a test file per worker (CI's machine has 2 cores)
TEST_WORKERS ?= 2
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
STAMP := $(VENV)/.deramos-deps

.PHONY: demo test lint format venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-dev.lock Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# torch + torchaudio first: on these machines they install from local wheels
	$(PIP) -c requirements-dev.lock torch torchaudio
	$(PIP) -c requirements-dev.lock -e ".[dev,train,rl,muq,demo]"
	# SoundFont player for the demo corpus; its only requirement (PyAudio) is for live playback
	$(PIP) -c requirements-dev.lock --no-deps tinysoundfont
	# AudioCraft recipe: audiocraft pins torch 2.1, so it goes in without its dependencies
	$(PIP) --no-deps audiocraft==1.3.0
	$(PIP) -c requirements-dev.lock av omegaconf num2words flashy torchmetrics xformers spacy librosa julius
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo_out
