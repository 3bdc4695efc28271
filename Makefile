# The targets wrap scripts/, which hold the logic, so that CI and developers run the same steps.
# `make run ARGS="..."` passes ARGS to the broker's subcommand.

.DEFAULT_GOAL := help
.PHONY: help run test generate lint tools

ARGS ?=

help: ## List the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z-]*:.*## / { printf "  make %-10s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

run: ## Run the broker: the local demo, or `serve` when BROKER_DATABASE_URL and BROKER_CONFIG are set
	@bash scripts/run.sh $(ARGS)

test: ## Run CI's checks: buf lint, gen/ freshness, go vet, staticcheck and go test -race with PostgreSQL
	@bash scripts/test.sh

bench: ## Run every benchmark scenario (about 5 min): a table on stdout and bench-out/results.json; ARGS="-quick" for a smoke run
	go run ./cmd/brokerbench $(ARGS)

generate: tools ## Regenerate gen/ from proto/ with buf
	.bin/buf generate

lint: tools ## Run buf lint, go vet and staticcheck
	.bin/buf lint
	go vet ./...
	.bin/staticcheck ./...

tools: ## Install the pinned tools (buf, protoc plugins, staticcheck, grpcurl) into .bin
	@bash scripts/install-tools.sh
