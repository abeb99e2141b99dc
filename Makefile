# cryptobot: every target CI runs is here; `make` alone lists them.
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(CURDIR)/target

.DEFAULT_GOAL := help
.PHONY: help run test lint fmt fmt-check clippy clippy-core doc ci bin seed-client browser-test bench bench-smoke openapi schemathesis asyncapi fuzz nginx-check deploy-check metrics-check deny

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

run: ## Run the server on embedded defaults (http://127.0.0.1:8080)
	$(CARGO) run --locked --release -p cryptobot-server --bin cryptobot

test: ## Run every Rust test in the workspace
	$(CARGO) test --workspace --locked --all-features

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check: ## Check formatting
	$(CARGO) fmt --all -- --check

clippy: ## Lint with clippy, warnings are errors
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

clippy-core: ## Lint the services' core alone (no sqlite, redis, binance), as the gateway builds it
	$(CARGO) clippy -p cryptobot-services --no-default-features --all-targets --locked -- -D warnings

lint: fmt-check clippy clippy-core ## fmt check + clippy (workspace, and the services' core alone)

doc: ## Build the docs, warnings are errors
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked

bin: ## Build the debug cryptobot binary used by the Node-driven tests
	$(CARGO) build --locked -p cryptobot-server --bin cryptobot

seed-client: bin ## The seed's JavaScript client, unchanged, against the real binary (needs Node)
	cd tests/seed-client && npm ci --no-audit --no-fund
	CRYPTOBOT_BIN=$(CARGO_TARGET_DIR)/debug/cryptobot scripts/with-server.sh sh -c 'node tests/seed-client/run.js "$$WS_URL"'

browser-test: bin ## Dashboard tests in headless Chromium (needs Node and /usr/bin/chromium)
	cd tests/browser && npm ci --no-audit --no-fund
	cd tests/browser && CRYPTOBOT_BIN=$(CARGO_TARGET_DIR)/debug/cryptobot npm test

openapi: ## Regenerate docs/openapi.json from the code (a test fails while they differ)
	UPDATE_OPENAPI=1 cargo test -p cryptobot-server --lib --locked openapi

schemathesis: bin ## schemathesis (PyPI) against the real binary, every check, ST_MAX_TIME s (default 60)
	CRYPTOBOT_BIN=$(CARGO_TARGET_DIR)/debug/cryptobot scripts/schemathesis.sh

asyncapi: bin ## docs/asyncapi.yaml against docs/protocol.md's examples and real frames of every type (PyYAML, jsonschema)
	CRYPTOBOT_BIN=$(CARGO_TARGET_DIR)/debug/cryptobot TICKS_PER_SECOND=20 CRYPTOBOT__SIGNALS__SHORT_WINDOW=2 \
	  CRYPTOBOT__SIGNALS__LONG_WINDOW=4 CRYPTOBOT__ALERTS__PRICE_MOVE_PCT=0.3 CRYPTOBOT__WS__PORTFOLIO_INTERVAL_SECS=1 \
	  scripts/with-server.sh python3 scripts/asyncapi_check.py

nginx-check: seed-client ## deploy/nginx/cryptobot.conf: nginx -t, then REST and a WebSocket through it over TLS (needs nginx, openssl)
	CRYPTOBOT_BIN=$(CARGO_TARGET_DIR)/debug/cryptobot scripts/nginx-check.sh

deploy-check: bin ## Dockerfile (hadolint), deploy/compose.yaml (docker-compose config), the systemd unit, LICENSE
	CRYPTOBOT_BIN=$(CARGO_TARGET_DIR)/debug/cryptobot scripts/deploy-check.sh

metrics-check: bin ## promtool check metrics on /metrics of every role: all, then engine and gateway through Redis (needs promtool, REDIS_URL)
	CRYPTOBOT_BIN=$(CARGO_TARGET_DIR)/debug/cryptobot scripts/promtool-check.sh

deny: ## cargo deny (deny.toml): advisories (RustSec's database, offline), licences, one version per crate, sources
	scripts/deny.sh

fuzz: ## cargo-fuzz targets (frame guard, request parser), FUZZ_SECS s each (default 300)
	scripts/fuzz.sh

bench: ## WebSocket fan-out scenarios (release build), rows appended to docs/benchmarks.md; then the criterion micro-benchmarks
	scripts/bench.sh
	$(CARGO) bench --locked -p cryptobot-ws-gateway --bench hot_paths -- --warm-up-time 1 --measurement-time 2

bench-smoke: ## A few seconds of cryptobot-load against the debug binary: messages must flow
	BENCH_PROFILE=debug scripts/bench.sh smoke

ci: lint deny test doc seed-client browser-test nginx-check deploy-check metrics-check schemathesis asyncapi fuzz bench-smoke ## What CI runs
