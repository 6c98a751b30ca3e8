# CT Severity Studio. `make run` sets everything up and starts the app; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.stamp
export CTSS_WORKSPACE ?= $(CURDIR)/workspace
DEMO_DIR := $(CTSS_WORKSPACE)/data/demo
DEMO_PATIENTS ?= 60
PORT ?= 8501
PACS_PORT ?= 8042
# pytest-xdist processes for `make test`: one per core of the 2-core reference host (a file's tests share a process)
TEST_WORKERS ?= 2

.PHONY: help venv chromium orthanc pacs demo-data demo-models real-models real-cv run test test-all bench clean-demo

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv and install requirements (reused while requirements are unchanged)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt -r requirements-dev.txt
	@touch $(STAMP)

demo-data: $(DEMO_DIR)/manifest.json ## build the synthetic demo phantoms once into the workspace

$(DEMO_DIR)/manifest.json: | $(STAMP)
	$(PY) -m ctmodels.imaging.phantom --out $(DEMO_DIR) --patients $(DEMO_PATIENTS) --seed 0

demo-models: venv demo-data ## train the demo model set (≈15 min on 2 cores; keeps what the recipe would build the same way)
	$(PY) -m training demo

real-models: venv ## train the real-CT model set on ../shared/data/real (≈28–35 min on 2 idle cores by host kind; keeps what the recipe would build the same way)
	$(PY) -m training real

real-cv: venv ## CV of the real-CT recipe: patient folds (FOLDS=5), then leave one source out (≈1 h each for 3 folds alone on 2 cores) → docs/measurements/real_{cv,loso}.*
	$(PY) -m training cv --recipe real --folds $(or $(FOLDS),5) --repeats $(or $(REPEATS),1) --out docs/measurements
	$(PY) -m training cv --recipe real --split sources --repeats $(or $(REPEATS),1) --out docs/measurements

bench: demo-models ## benchmark the demo models → reports/bench.json and reports/bench.md
	$(PY) -m training.evaluation.bench

run: venv demo-data ## install, build demo data, serve the app on 127.0.0.1:$(PORT)
	$(PY) -m streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

chromium: ## the browser the e2e test drives (Debian's chromium; installed with apt-get when missing)
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || \
	  (echo "installing Debian's chromium for the browser test …" && apt-get update -qq && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  { echo "error: the browser test needs Debian's chromium: apt-get install -y chromium (as root)"; exit 1; }

orthanc: ## the PACS the tests and `make pacs` start (Debian's orthanc + orthanc-dicomweb; apt-get when missing)
	@test -x /usr/sbin/Orthanc -a -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so || \
	  (echo "installing Debian's orthanc and orthanc-dicomweb for the PACS tests …" && apt-get update -qq && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null) || \
	  { echo "error: the PACS tests need Orthanc: apt-get install -y orthanc orthanc-dicomweb (as root)"; exit 1; }

pacs: venv demo-data orthanc ## a local Orthanc PACS on 127.0.0.1:$(PACS_PORT) with the sample studies (DICOMweb; Ctrl-C stops)
	$(PY) -m ctmodels.pacs --port $(PACS_PORT)

test: venv chromium orthanc ## run the default test suite, the browser and PACS tests included (TEST_WORKERS=2 processes; no GPU needed)
	@$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-all: venv chromium orthanc ## run every test, the slow ones too
	$(PY) -m pytest -m "not gpu"

clean-demo: ## delete the demo phantoms (rebuilt by the next `make run`)
	rm -rf $(DEMO_DIR)
