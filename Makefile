# Two commands: `make run` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= conf/site.toml
STAMP := $(VENV)/.installed
TRAIN_STAMP := $(VENV)/.installed-train

.PHONY: run test test-pi venv train-deps browser system-deps bench clean

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

# Real servers the tests need, from Debian's packages where missing, never skipped:
# a headless Chromium for the web page (chromium, chromium-driver) and Mosquitto for
# the MQTT uplink (mosquitto, mosquitto-clients; openssl makes the test certificates).
SYSTEM_TOOLS := chromium:chromium chromedriver:chromium-driver mosquitto:mosquitto \
	mosquitto_passwd:mosquitto mosquitto_sub:mosquitto-clients openssl:openssl

system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
		command -v $${pair%%:*} >/dev/null || [ -x /usr/sbin/$${pair%%:*} ] || \
			missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "make: installing$$missing (apt-get) for the browser and broker tests"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

browser: system-deps

test: $(TRAIN_STAMP) system-deps
	$(BIN)/python -m pytest -q

# The Pi install proven in an emulated Debian bookworm root (not part of `make
# test`: building the root takes minutes; it is cached under .cache/pi/). Root.
ARCH ?= aarch64
test-pi: $(STAMP)
	nice -n 10 $(BIN)/python bench/pi_emulated.py --arch $(ARCH)

clean:
	rm -rf $(VENV) data
