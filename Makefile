# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.13.0: the machines here carry its CPU wheel locally (pip's find-links), so no CUDA download.
# The images ship torch 2.11.0 (images/pins.py TORCH: what pyannote.audio 4.0.7 installs with), as does
# PYANNOTE_PINS below; the embedded diarizer runs on both. tests/test_modal_images.py checks each pin.
TORCH ?= torch==2.13.0

.PHONY: install run test test-fast test-pyannote bench bench-long bench-stream bench-abuse fixtures clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	# resemblyzer asks for plain `webrtcvad` (needs pkg_resources); webrtcvad-wheels provides the module.
	$(BIN)/pip install -q --no-deps resemblyzer==0.1.4
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python -m local_dev serve

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# a/b/c against faster-whisper used directly, then the worker-pool concurrency section
bench: install
	$(BIN)/python -m local_dev.bench
	$(BIN)/python -m local_dev.bench.streaming

# live streaming through a running server: latency, WER vs offline, concurrent streams (make bench-stream
# STREAM_ARGS="--minutes 2 --levels 1,4")
STREAM_ARGS ?=
bench-stream: install
	$(BIN)/python -m local_dev.bench.streaming $(STREAM_ARGS)

# each attack of issue 20 for 60 s against the server as `make run` starts it, beside one honest live
# session: RSS growth, /healthz latency, the honest session's final latency (make bench-abuse
# ABUSE_ARGS="--seconds 10 --attacks trickle,deflate-bomb"); docs/security.md#measured
ABUSE_ARGS ?=
bench-abuse: install
	$(BIN)/python -m local_dev.bench.abuse $(ABUSE_ARGS)

# accuracy on ../shared/data and conversations built from its voices (local_dev/eval/), e.g.
# make eval EVAL_ARGS="--half tune --limit 3". DIARIZER=pyannote runs in the pyannote environment
# (make eval DIARIZER=pyannote PYANNOTE_MODEL=<hub id or local path> HUGGINGFACE_TOKEN=...).
.PHONY: eval eval-live
EVAL_ARGS ?=
DIARIZER ?=
EVAL_ENV = $(if $(filter pyannote,$(DIARIZER)),.venv-pyannote,$(VENV))
eval: $(EVAL_ENV)/.installed
	$(if $(DIARIZER),DIARIZER=$(DIARIZER) )$(EVAL_ENV)/bin/python -m local_dev.eval $(EVAL_ARGS)

# live speakers on quick hand-overs and the real recordings: STREAM_TURN_THRESHOLD, STREAM_SPEAKER_THRESHOLD
# and STREAM_SPEAKER_RECLUSTER swept on the tune half, reported on the check half beside the offline diarizer
eval-live: install
	$(BIN)/python -m local_dev.eval.live_turns

# long-form: 15 min, 1 h, 4 h mp3s through the job API of a running server (make bench-long SIZES=2m)
bench-long: install
	$(BIN)/python -m local_dev.bench.long_form $(if $(SIZES),--sizes $(SIZES))

# pyannote.audio 4.0.7 in its own environment (6.5 GB: torch 2.11 with its CUDA 13 wheels; ~2 min here).
# torch, pyannote.audio and this project are resolved in ONE pip command with torch pinned: unpinned,
# pip takes the newest torch (2.15.0) beside torchaudio 2.11.0, which was built for torch 2.11 only; and torchaudio
# itself is pinned, as the diarizer image pins it: 2.11.1 (Dec 2026) does not load beside torch 2.11.0.
PYANNOTE_VENV := .venv-pyannote
PYANNOTE_PINS ?= torch==2.11.0 torchaudio==2.11.0 pyannote.audio==4.0.7

$(PYANNOTE_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(PYANNOTE_VENV)
	$(PYANNOTE_VENV)/bin/pip install -q --upgrade pip
	$(PYANNOTE_VENV)/bin/pip install -q $(PYANNOTE_PINS) -e '.[dev]'
	$(PYANNOTE_VENV)/bin/pip install -q --no-deps resemblyzer==0.1.4
	$(PYANNOTE_VENV)/bin/python -c "import torch, torchaudio, pyannote.audio as pa; print('torch', torch.__version__, 'torchaudio', torchaudio.__version__, 'pyannote.audio', pa.__version__)"
	touch $@

# Real pyannote.audio pipeline code on a locally built random-weight checkpoint: no hub, no telemetry.
test-pyannote: $(PYANNOTE_VENV)/.installed
	HF_HUB_OFFLINE=1 PYANNOTE_METRICS_ENABLED=false $(PYANNOTE_VENV)/bin/python -m pytest -q -m pyannote

clean:
	rm -rf $(VENV) $(PYANNOTE_VENV) .pytest_cache
