# Two commands: `make run` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= conf/site.toml
STAMP := $(VENV)/.installed
TRAIN_STAMP := $(VENV)/.installed-train

.PHONY: run test test-pi venv train-deps bench clean

$(STAMP): setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(TRAIN_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[train,test]'
	touch $@

venv: $(STAMP)

train-deps: $(TRAIN_STAMP)

run: $(TRAIN_STAMP)
	$(BIN)/python supervisor.py --config $(CONFIG)

test: $(TRAIN_STAMP)
	$(BIN)/python -m pytest -q

# The Pi install proven in an emulated Debian bookworm root (not part of `make
# test`: building the root takes minutes; it is cached under .cache/pi/). Root.
ARCH ?= aarch64
test-pi: $(STAMP)
	nice -n 10 $(BIN)/python bench/pi_emulated.py --arch $(ARCH)

clean:
	rm -rf $(VENV) data
