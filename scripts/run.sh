#!/usr/bin/env bash
# Runs the broker from source. When BROKER_DATABASE_URL and BROKER_CONFIG are both set, it runs
# `broker serve` against them. Otherwise it runs `broker demo`, which starts a local PostgreSQL
# cluster, the Acumatica emulator and the broker together. Arguments go to the subcommand.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/ensure-postgres.sh

if [[ -n "${BROKER_DATABASE_URL:-}" && -n "${BROKER_CONFIG:-}" ]]; then
	subcommand=serve
else
	if [[ -n "${BROKER_DATABASE_URL:-}" || -n "${BROKER_CONFIG:-}" ]]; then
		echo "run: only one of BROKER_DATABASE_URL and BROKER_CONFIG is set, and serve needs both;" \
			"running the demo instead" >&2
	fi
	subcommand=demo
fi

# Build and exec instead of `go run`, so that SIGINT and SIGTERM reach the broker itself, which
# then stops cleanly (in demo mode, with its PostgreSQL cluster), and its exit code is kept.
mkdir -p .bin
go build -o .bin/broker ./cmd/broker
exec .bin/broker "$subcommand" "$@"
