# Two commands: `make run` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= conf/site.toml
STAMP := $(VENV)/.installed
TRAIN_STAMP := $(VENV)/.installed-train

.PHONY: run test venv train-deps browser bench clean

$(STAMP): setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(TRAIN_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[train,test,eval]'
	touch $@

venv: $(STAMP)

train-deps: $(TRAIN_STAMP)

run: $(TRAIN_STAMP)
	$(BIN)/python supervisor.py --config $(CONFIG)

# The web page's tests drive a real headless Chromium (Debian's chromium and
# chromium-driver); installed here where missing, never skipped.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "make: installing chromium and chromium-driver (apt-get) for the browser tests"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	fi

test: $(TRAIN_STAMP) browser
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) data
