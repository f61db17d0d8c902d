# One-command entry points. Everything installs into .venv; `make setup` is idempotent.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: setup lock browser demo test test-fast bench lint docs clean serve stop gpu-wheels gpu-check \
	gpu-wheels-decode gpu-check-decode gpu-check-dry gpu-carry-size gpu-rehearse

setup: $(STAMP) browser

# The UI test drives Debian's chromium (playwright's own browser download cannot work here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    for try in 1 2 3; do \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	        && break; sleep 10; \
	    done; command -v chromium >/dev/null || { echo "could not install chromium"; exit 1; }; \
	  else \
	    echo "note: install Debian's chromium (sudo apt-get install chromium) for the UI test"; \
	  fi; }

# Exactly the locked versions, every file checked against its hash; csdm and the agent on top,
# without dependencies of their own, and `pip check` fails if the lock no longer covers them.
$(STAMP): pyproject.toml agent/pyproject.toml requirements.lock
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH (or run: make PY=python3 ...)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . -e ./agent
	$(BIN)/pip check
	touch $(STAMP)

# Re-resolve the three locks from their requirements.in (pyproject.toml keeps its ranges).
UV := $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11
lock: $(STAMP)
	$(BIN)/pip install --quiet uv==0.13.9
	$(UV) requirements.in --find-links /opt/wheels --python-platform x86_64-manylinux_2_28 \
	  --no-emit-package csdm --no-emit-package csdm-agent -o requirements.lock
	cd agent && ../$(UV) requirements.in --universal --no-emit-package csdm-agent \
	  -o requirements.lock
	$(UV) tests/keras/requirements.in --python-platform x86_64-manylinux_2_28 \
	  -o tests/keras/requirements.lock
	$(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.10 \
	  --python-platform x86_64-manylinux_2_28 tests/diamond_env/requirements.in \
	  -o tests/diamond_env/requirements.lock
	$(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.12 \
	  --python-platform x86_64-manylinux_2_28 tests/gpu_rehearse/requirements.in \
	  -o tests/gpu_rehearse/requirements.lock

demo: setup
	rm -rf $(DEMO_OUT)
	$(BIN)/csdm synth $(DEMO_OUT)/source --seed 0
	$(BIN)/csdm infer $(DEMO_OUT)/source --out $(DEMO_OUT)/labels
	$(BIN)/csdm pipeline $(DEMO_OUT)/dataset --source $(DEMO_OUT)/source --workers 2 --test-fraction 0.25
	$(BIN)/csdm query $(DEMO_OUT)/dataset "select dataset, split, count(*) as frames, round(avg(key_w::int), 3) as w_rate from frames group by all order by all"
	$(BIN)/csdm query $(DEMO_OUT)/dataset "select episode, keep, reject_reason from files order by episode"
	$(BIN)/csdm verify $(DEMO_OUT)/dataset
	$(BIN)/csdm views $(DEMO_OUT)/dataset --size 64x112 --fit crop --filter area --workers 2
	$(BIN)/csdm train $(DEMO_OUT)/dataset --run $(DEMO_OUT)/runs/tiny --preset tiny --steps 20
	$(BIN)/csdm export $(DEMO_OUT)/runs/tiny --out $(DEMO_OUT)/export
	$(BIN)/csdm register $(DEMO_OUT)/export --registry $(DEMO_OUT)/registry --name csdm-policy --alias production
	$(BIN)/csdm-agent pull --registry $(DEMO_OUT)/registry --name csdm-policy --alias production --dest $(DEMO_OUT)/agent-models
	mkdir -p $(DEMO_OUT)/replay && tar -xf $(DEMO_OUT)/source/hdf5_dm_july2021_1_to_3.tar -C $(DEMO_OUT)/replay hdf5_dm_july2021_1.hdf5
	$(BIN)/csdm-agent run --model $(DEMO_OUT)/agent-models/csdm-policy/v1 --dry-run --replay $(DEMO_OUT)/replay/hdf5_dm_july2021_1.hdf5 --max-frames 64 --seed 0
	$(BIN)/csdm view $(DEMO_OUT)/dataset dm_july2021_expert_1 --start 40 --count 32 --out $(DEMO_OUT)/view.gif
	$(BIN)/csdm report $(DEMO_OUT)/dataset --out $(DEMO_OUT)/report
	@echo
	@echo "Dataset in $(DEMO_OUT)/dataset: frames.zarr, catalog/ (index.json, compacted Parquet), manifest.json"
	@echo "Read it: python -c \"from storage import open_dataset; d = open_dataset('$(DEMO_OUT)/dataset'); print(d.frames(d.episodes[0], 0, 96).shape)\""
	@echo "Query it: .venv/bin/csdm query $(DEMO_OUT)/dataset \"select episode, count(*) from frames where key_w group by all\""
	@echo "Policy: $(DEMO_OUT)/registry/csdm-policy/v1 (policy.onnx + policy.json), alias production"
	@echo "Report: $(DEMO_OUT)/report/index.html (open it in a browser); frames with actions: $(DEMO_OUT)/view.gif"
	@echo "Operate it: make serve, then the Prefect UI at http://127.0.0.1:4200 (deployments ingest, process, pipeline, daily-refresh, train)"

# One pytest process per core; a test file stays on one process, so its module fixtures are
# built once (measured on 2 cores: 447 s against 701 s in one process).
test: setup
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=15

test-fast: setup
	$(BIN)/python -m pytest -q -n auto --dist loadfile -m "not slow"

bench: setup
	$(BIN)/python -m bench.infer
	$(BIN)/python -m bench.repack
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.objectstore
	$(BIN)/python -m bench.loader
	$(BIN)/python -m bench.train
	$(BIN)/python -m bench.agent

serve: setup
	infra/serve.sh

stop:
	infra/stop.sh

# The GPU machine has no network and a python3 with torch, onnx and onnxruntime but not csdm's
# storage stack. `make gpu-wheels` (here) fetches the wheels it lacks into .whl/ (about 61 MiB,
# carried with the tree); `make gpu-check` (there) installs them aside and runs the check.
GPU_WHEELS := zarr==3.1.6 numcodecs==0.16.6 imagecodecs==2026.3.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
	duckdb==2.0.1 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
	typing-inspection==0.4.5
# GPU decoding's check carries nvCOMP instead of duckdb (both do not fit in 64 MiB); numba is
# left out of both: llvmlite alone is 60 MB, and the device's CPU reads then undo the
# predictor with numpy (storage/unpredict.py says so)
GPU_DECODE_WHEELS := $(filter-out duckdb% imagecodecs%,$(GPU_WHEELS))
# Installed here and pruned to what the decode check loads on Python 3.12, since whole they
# would not fit the 64 MiB carry (measured by `make gpu-carry-size`): nvCOMP 6's module and
# the libnvcomp.so.6 it loads (nvidia-libnvcomp-cu13, a 30 MB wheel), and imagecodecs' zstd,
# delta and shared modules (the whole wheel is 26 MB of codecs csdm's frames do not use).
PRUNED_WHEELS := nvidia-nvcomp-cu13==6.0.0.12 nvidia-libnvcomp-cu13==6.0.0.12 \
	$(filter imagecodecs%,$(GPU_WHEELS))
GPU_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64

gpu-wheels: setup
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp $(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)

gpu-wheels-decode: setup
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp $(GPU_PLATFORMS) -d .whl-decode $(GPU_DECODE_WHEELS)
	rm -rf .whl-decode/site && tmp=$$(mktemp -d) && \
	  $(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	    --implementation cp $(GPU_PLATFORMS) -d $$tmp $(PRUNED_WHEELS) && \
	  $(BIN)/pip install --quiet --no-deps --no-index --no-compile --target .whl-decode/site \
	    --python-version 3.12 --implementation cp --only-binary=:all: $(GPU_PLATFORMS) \
	    $$tmp/*.whl && rm -rf $$tmp
	cd .whl-decode/site && find nvidia/nvcomp -name 'nvcomp_impl.cpython-*.so' \
	  ! -name 'nvcomp_impl.cpython-312-*' -delete && \
	  rm -rf nvidia/libnvcomp/lib64/libnvcomp_cpu.so* nvidia/libnvcomp/lib64/cmake nvidia/libnvcomp/bin \
	    nvidia/libnvcomp/include && \
	  find imagecodecs -name '_*.so' ! -name '_imcd.*' ! -name '_zstd.*' ! -name '_shared*' \
	    -delete && find imagecodecs.libs -type f ! -name 'libzstd*' -delete
	$(MAKE) --no-print-directory gpu-carry-size

# What a device run carries: the tree as git has it, plus the wheels folder (64 MiB at most)
gpu-carry-size:
	@tree=$$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1); \
	wheels=$$(du -sb .whl-decode 2>/dev/null | cut -f1); wheels=$${wheels:-0}; \
	total=$$((tree + wheels)); \
	echo "carry: tree $$((tree >> 20)) MiB + .whl-decode $$((wheels >> 20)) MiB = $$((total >> 20)) MiB of 64"; \
	test $$total -le $$((64 << 20)) || { echo "over the 64 MiB carry"; exit 1; }

# The device's python3, and where its carried wheels go (`make gpu-rehearse` points both at a
# venv here that holds only what the device holds)
DEVICE_PY ?= python3
GPU_SITE ?= /tmp/csdm-site
GPU_DECODE_SITE ?= /tmp/csdm-decode-site
GPU_ARGS ?=

gpu-check:
	@test -d .whl || { echo "no .whl/: run 'make gpu-wheels' here first and carry .whl"; exit 1; }
	$(DEVICE_PY) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
	  --target $(GPU_SITE) .whl/*.whl
	PYTHONPATH=$(GPU_SITE):$(CURDIR):$(CURDIR)/agent PYTHONUNBUFFERED=1 $(DEVICE_PY) -m bench.gpu_check \
	  --out $${OUT:-bench_out} $(GPU_ARGS)

gpu-check-decode:
	@test -d .whl-decode || { echo "no .whl-decode/: run 'make gpu-wheels-decode' here first"; exit 1; }
	$(DEVICE_PY) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
	  --target $(GPU_DECODE_SITE) .whl-decode/*.whl
	PYTHONPATH=$(GPU_DECODE_SITE):$(CURDIR)/.whl-decode/site:$(CURDIR):$(CURDIR)/agent \
	  PYTHONUNBUFFERED=1 $(DEVICE_PY) -m bench.gpu_decode \
	  --out $${OUT:-bench_out}

# Both device checks on this CPU machine, in a venv holding only what the device holds
# (tests/gpu_rehearse/requirements.lock, Python 3.12) plus the carry, installed as the device
# targets install it: an import that would fail there fails here first. gpu-check runs its
# CPU dry run; gpu-check-decode runs until its first CUDA call (its JSON says which step).
REHEARSE := .cache/gpu-rehearse-venv
REHEARSE_LOCK := tests/gpu_rehearse/requirements.lock
PY312 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3.12)
gpu-rehearse: gpu-wheels gpu-wheels-decode
	@if ! cmp -s $(REHEARSE_LOCK) $(REHEARSE)/.lock; then \
	  rm -rf $(REHEARSE) && $(PY312) -m venv $(REHEARSE) && \
	  $(REHEARSE)/bin/pip install --quiet --no-compile --require-hashes -r $(REHEARSE_LOCK) && \
	  cp $(REHEARSE_LOCK) $(REHEARSE)/.lock; fi
	rm -rf $(REHEARSE)/site $(REHEARSE)/decode-site bench_out/rehearse
	$(MAKE) --no-print-directory gpu-check DEVICE_PY=$(REHEARSE)/bin/python \
	  GPU_SITE=$(REHEARSE)/site GPU_ARGS=--dry-run OUT=bench_out/rehearse
	$(MAKE) --no-print-directory gpu-check-decode DEVICE_PY=$(REHEARSE)/bin/python \
	  GPU_DECODE_SITE=$(REHEARSE)/decode-site OUT=bench_out/rehearse

gpu-check-dry: setup
	$(BIN)/python -m bench.gpu_check --dry-run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The site under site/: the command reference regenerated from the CLI's help, then mkdocs in
# strict mode, which fails on a broken link or anchor and on a page that does not build.
docs: setup
	$(BIN)/python docs/gen_commands.py
	$(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache site
