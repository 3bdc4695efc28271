#!/usr/bin/env bash
# Runs every check that CI runs, in order, and stops at the first failure:
#
#   1. installs the PostgreSQL server and the pinned tools when they are missing;
#   2. buf lint, and a check that gen/ matches what `buf generate` makes from proto/;
#   3. go vet and staticcheck;
#   4. go test -race over every package, against a throwaway PostgreSQL cluster that
#      internal/tools/withpg starts and removes (or against BROKER_TEST_DATABASE_URL when set).
#
# go test's own output, with its closing ok and FAIL lines, goes to stdout.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.bin:$PATH"

work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

step() {
	printf '==> %s\n' "$*" >&2
}

step "ensure the PostgreSQL server is installed"
bash scripts/ensure-postgres.sh

step "install the pinned tools"
bash scripts/install-tools.sh

step "buf lint"
buf lint

step "check that gen/ is up to date"
# buf generate writes each plugin's out directory (gen) below --output.
buf generate --output "$work_dir/generated"
if ! diff -r "$work_dir/generated/gen" gen >"$work_dir/gen.diff" 2>&1; then
	cat "$work_dir/gen.diff" >&2
	echo "gen/ is stale: run make generate" >&2
	exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
staticcheck ./...

test_cmd=(go test -race -count=1 -timeout 15m ./...)
if [[ -n "${BROKER_TEST_DATABASE_URL:-}" ]]; then
	step "go test, with the database server in BROKER_TEST_DATABASE_URL"
	"${test_cmd[@]}"
else
	step "go test, with a throwaway PostgreSQL cluster"
	# A built binary, unlike go run, passes on the exit code of go test.
	go build -o "$work_dir/withpg" ./internal/tools/withpg
	"$work_dir/withpg" -- "${test_cmd[@]}"
fi
