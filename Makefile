# Kagent — every target creates .venv and installs the project on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help demo demo-down test test-unit test-integration dev dev-down crds docs bench lint clean system-deps \
	dashboard container-deps image test-image test-real-pods real-pod-deps image-lock node-binaries release

help:
	@echo "make demo      the whole system on a local cluster, offline: agents, a live workflow run"
	@echo "make demo-down stop everything make demo started"
	@echo "make test      run the whole test suite: unit, integration on a real control plane,"
	@echo "               and the image as real pods on a real node (as root; REAL_PODS=0 skips it)"
	@echo "make test-real-pods  the real-pod tier alone (make test-unit, test-integration: the rest)"
	@echo "make container-deps / test-image / node-binaries  what the real-pod tier prepares"
	@echo "make dev       start a local control plane with Kagent (kagent dev up)"
	@echo "make dev-down  stop it"
	@echo "make crds      regenerate charts/kagent/crds from the API types"
	@echo "make docs      regenerate docs/reference/api.md from the API types"
	@echo "make bench     run the benchmarks"
	@echo "make image     build the Kagent image without Docker (dist/kagent-<version>.oci.tar;"
	@echo "               CA_BUNDLE=file adds certificate authorities for the downloads only)"
	@echo "make release   the chart package and the image archive, checksums and an SBOM in dist/"
	@echo "make dashboard rebuild the dashboard's front-end into kagent/dashboard/static (npm)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages the tests need beyond what pip installs (the real Redis server).
system-deps:
	@hack/system-deps.sh

# The whole suite, the real-pod tier included (REAL_PODS=0 leaves it out).
test: $(STAMP) system-deps real-pod-deps
	KAGENT_REAL_PODS=$(REAL_PODS) $(BIN)/pytest $(PYTEST_ARGS)

# The real-pod tier: the Kagent image built here run as real pods on a real node (root; it
# changes the host while it runs, see docs/development.md). As root, its Debian packages, the
# image and the node binaries are prepared first (each only when missing or out of date);
# without root its tests skip, naming why.
REAL_PODS ?= 1
real-pod-deps:
	@if [ "$(REAL_PODS)" != 1 ]; then echo "the real-pod tier is left out (REAL_PODS=$(REAL_PODS))"; \
	elif [ "$$(id -u)" != 0 ]; then echo "the real-pod tier needs root: its tests will skip"; \
	else $(MAKE) --no-print-directory container-deps test-image node-binaries; fi

# The real-pod tier alone.
test-real-pods: $(STAMP) system-deps container-deps test-image node-binaries
	KAGENT_REAL_PODS=1 $(BIN)/pytest tests/integration/test_real_pods.py \
	  tests/integration/test_real_pods_image.py tests/integration/test_real_pods_dev.py $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP) system-deps
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/kagent dev demo

demo-down: $(STAMP)
	$(BIN)/kagent dev down

dev: $(STAMP)
	$(BIN)/kagent dev up

dev-down: $(STAMP)
	$(BIN)/kagent dev down

crds: $(STAMP)
	$(BIN)/kagent crds

docs: $(STAMP)
	$(BIN)/kagent docs

bench: $(STAMP) system-deps
	$(BIN)/python -m benchmarks

# The dashboard's front-end is checked in built (pip install ships it); this rebuilds it from
# web/dashboard with the versions package-lock.json pins.
dashboard:
	cd web/dashboard && npm ci --no-audit --no-fund && npm run build

# --- the image, real nodes and releases (hack/image, kagent/local/realnode.py) -----------------
# Debian packages that build the image and run a real node (mmdebstrap, podman, containerd, …).
container-deps:
	@hack/container-deps.sh

# The Kagent image from package registries alone; rebuilt only when its sources changed.
image: $(STAMP) container-deps
	$(BIN)/python hack/image/build.py $(if $(CA_BUNDLE),--ca-bundle $(CA_BUNDLE)) $(IMAGE_ARGS)

# The same for the real-pod tests: where the image cannot be built (not root), say why and go
# on; those tests then skip with that reason.
test-image: $(STAMP) container-deps
	$(BIN)/python hack/image/build.py --best-effort $(if $(CA_BUNDLE),--ca-bundle $(CA_BUNDLE))

# Re-pin the image's Python dependencies (after changing pyproject.toml's dependencies).
image-lock: $(STAMP)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_36 --no-header --quiet -o hack/image/requirements.lock
	$(BIN)/uv pip compile hack/image/tools.in --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_36 --no-header --quiet -o hack/image/tools.lock

# kubelet, kube-proxy, CoreDNS and pause for real nodes, built once into ~/.cache/kagent.
node-binaries: $(STAMP) container-deps
	$(BIN)/python -m kagent.local.binaries node >/dev/null

# The chart package and the image archive with one version, SHA-256 checksums and an SBOM.
release: image
	$(BIN)/python hack/release.py

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
