# skewless developer entry points. `make help` lists them.
# Everything runs from a project-local virtualenv (.venv) created by `make setup`.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
GOBIN := $(CURDIR)/.tools/bin
REPO ?= examples/rides
UI_PORT ?= 8566
PROTOS := $(wildcard protos/skewless/v1/*.proto)
PYGEN := clients/python
# The server distribution's source roots, one per stage of the data flow.
PYROOTS := core registry offline online materialization server console
# The layering check (import-linter, contract in pyproject.toml) reads the source roots
# themselves: the editable install's import hooks hide them from a file scan.
LAYERS := PYTHONPATH=$(subst $() ,:,$(PYROOTS) clients/python) $(BIN)/lint-imports --no-cache
GENERATED := $(PYGEN)/skewless/v1 clients/go/gen

include clients/clients.mk

.PHONY: help setup system-deps tools tools-s3 gen check-gen lint typecheck run apply materialize example-data test bench bench-tools clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e clients/python -e '.[dev,spark]'
	touch $@

system-deps: ## Install redis-server, the gRPC Java generator and headless Chromium when missing (Debian, needs root)
	@{ command -v redis-server >/dev/null && test -x /usr/bin/grpc_java_plugin && test -x /usr/bin/chromium && test -x /usr/bin/chromedriver; } || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server protobuf-compiler-grpc-java-plugin chromium chromium-driver >/dev/null; \
	  else echo "install redis-server, protobuf-compiler-grpc-java-plugin, chromium and chromium-driver (apt-get), or set online_store.redis_url" >&2; exit 1; fi; }

tools: ## Install grpcurl into .tools/bin (Go module proxy)
	@test -x $(GOBIN)/grpcurl || GOBIN=$(GOBIN) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3

# SeaweedFS (Apache-2.0): the S3-compatible server the object-storage tests start on loopback.
# `go install` refuses it (its go.mod has replace directives), so build it from its module
# source, once: several minutes on 2 cores. The version is stamped so a new pin rebuilds it.
WEED_MODULE := github.com/seaweedfs/seaweedfs
WEED_VERSION := v0.0.0-20261109003541-7506e5f91cd6
WEED_COMMIT := $(lastword $(subst -, ,$(WEED_VERSION)))

tools-s3: ## Build SeaweedFS's weed (S3 server for tests) into .tools/bin, once
	@$(GOBIN)/weed version 2>/dev/null | grep -q ' $(WEED_COMMIT) ' || { set -e; \
	  echo "building weed $(WEED_VERSION) into $(GOBIN) (once; several minutes)"; \
	  mod=$$(go mod download -json $(WEED_MODULE)@$(WEED_VERSION)) || { echo "$$mod" >&2; exit 1; }; \
	  src=$$(echo "$$mod" | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); test -d "$$src"; mkdir -p $(GOBIN); tmp=$$(mktemp -d $(CURDIR)/.tools/weed-build.XXXXXX); \
	  trap 'chmod -R u+w "$$tmp"; rm -rf "$$tmp"' EXIT; trap 'exit 1' INT TERM HUP; \
	  cp -r "$$src" "$$tmp/src"; chmod -R u+w "$$tmp/src"; \
	  (cd "$$tmp/src" && go build -buildvcs=false -trimpath \
	    -ldflags '-s -w -X $(WEED_MODULE)/weed/util/version.COMMIT=$(WEED_COMMIT)' -o "$$tmp/weed" ./weed); \
	  mv -f "$$tmp/weed" $(GOBIN)/weed; }

setup: system-deps $(VENV)/.installed tools tools-go tools-s3 ## Install everything: redis-server, the Python env, grpcurl, weed

gen: $(VENV)/.installed gen-go ## Regenerate the Python and Go stubs from protos/ (Java generates at build)
	$(PY) -m grpc_tools.protoc -I protos \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
	  --python_out=$(PYGEN) --grpc_python_out=$(PYGEN) \
	  --mypy_out=$(PYGEN) --mypy_grpc_out=$(PYGEN) \
	  $(PROTOS)

check-gen: gen ## Fail when the committed generated code differs from protos/
	@git diff --exit-code -- $(GENERATED) && test -z "$$(git status --porcelain -- $(GENERATED))" \
	  || { echo "generated code is stale: run 'make gen' and commit" >&2; exit 1; }

# `buf breaking` compares the contract with where this work started: the merge base with
# main on a branch (every commit of it at once), the previous commit of main on main.
BREAKING_BASE = $(shell base=$$(git merge-base HEAD main 2>/dev/null || git merge-base HEAD origin/main 2>/dev/null); \
  if [ -n "$$base" ] && [ "$$base" != "$$(git rev-parse HEAD)" ]; then echo $$base; \
  else git rev-parse -q --verify HEAD~1 2>/dev/null; fi)

lint: $(VENV)/.installed typecheck ## buf lint, buf breaking (against main's merge base), ruff, mypy, layering
	cd protos && ../$(BIN)/buf lint
	@base="$(BREAKING_BASE)"; if [ -n "$$base" ] && git cat-file -e $$base:protos/buf.yaml 2>/dev/null; then \
	  echo "buf breaking against $$base"; cd protos && ../$(BIN)/buf breaking --against "../.git#ref=$$base,subdir=protos"; \
	else echo "buf breaking: no earlier commit with protos/, skipped"; fi
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .
	$(LAYERS)

typecheck: $(VENV)/.installed ## mypy --strict on our Python code
	$(BIN)/mypy $(PYROOTS) clients/python/skewless/client

example-data: $(VENV)/.installed ## Generate the example repository's Parquet files
	$(PY) $(REPO)/generate_data.py

apply: example-data ## Apply the example repository
	$(BIN)/skewless apply $(REPO)

materialize: apply ## Materialize the example from its watermark to now (both stores)
	$(BIN)/skewless materialize-incremental --repo $(REPO)

run: setup materialize ## The main job: apply and materialize the example, serve it (and the web console) on the embedded Redis
	$(BIN)/skewless serve $(REPO) --ui-port $(UI_PORT)

test: setup ## Run the whole test suite (starts its own Redis and servers)
	$(BIN)/pytest -q

bench-tools: ## Install the load generator ghz into .tools/bin
	@test -x $(GOBIN)/ghz || GOBIN=$(GOBIN) go install github.com/bojand/ghz/cmd/ghz@v0.120.0

bench: setup bench-tools ## Run all benchmarks (not part of `make test`; see bench/README.md)
	$(PY) bench/materialize.py --repeat 3
	$(PY) bench/online.py --loadgen raw
	$(PY) bench/historical.py --rows 1000000
	$(PY) bench/console.py

clean: ## Remove the virtualenv, tools and example data
	rm -rf $(VENV) .tools $(REPO)/data $(REPO)/.skewless
