# assetq: the two commands are `make demo` (set up + run the bundled sample job,
# no Redis needed) and `make test` (set up + the whole test suite; .ci/run calls it).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export ASSETQ_MODEL_DIR ?= $(HOME)/.cache/assetq/models

.PHONY: setup models demo test lint services bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

models: setup
	$(BIN)/assetq models install --all

demo: models
	$(BIN)/assetq run samples --out out/demo --spec docs/examples/demo-spec.json

# Debian's redis-server for the tests' private Redis instances, the DejaVu fonts the OCR tests
# render text with, docker-compose to check docker-compose.yml without an engine, Chromium with
# its driver for the operator page's browser test, and RabbitMQ, running on 127.0.0.1:5672 (the
# RabbitMQ tests make a vhost of their own on it with rabbitmqctl).
services:
	@command -v redis-server >/dev/null && command -v docker-compose >/dev/null \
	  && command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  && command -v rabbitmqctl >/dev/null \
	  && [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || \
	  (apt-get update -qq && apt-get install -y -qq redis-server fonts-dejavu-core docker-compose \
	     chromium chromium-driver rabbitmq-server)
	@rabbitmqctl -q status >/dev/null 2>&1 || service rabbitmq-server start >/dev/null 2>&1 \
	  || rabbitmq-server -detached
	@rabbitmqctl -q start_app >/dev/null 2>&1; rabbitmqctl -q await_startup --timeout 120 >/dev/null

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cli config contract producer worker

test: lint models services
	$(BIN)/pytest -q -p no:cacheprovider -n 3 --dist loadgroup --durations=10

bench: models
	$(BIN)/python -m benchmarks

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
