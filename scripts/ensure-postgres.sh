#!/usr/bin/env bash
# Installs the PostgreSQL server package unless its binaries (initdb, pg_ctl, postgres) are
# already present. Prints nothing when they are.
#
# The search order matches internal/pgcluster.BinDir: PG_BINDIR, `pg_config --bindir`, the newest
# /usr/lib/postgresql/VERSION/bin, then PATH. The install uses apt-get, directly as root or
# through sudo. Without either, the script prints the command to run and exits 1.
set -euo pipefail

# has_server_binaries DIR succeeds when DIR contains executable initdb, pg_ctl and postgres.
has_server_binaries() {
	local dir=$1 name
	[[ -n "$dir" ]] || return 1
	for name in initdb pg_ctl postgres; do
		[[ -f "$dir/$name" && -x "$dir/$name" ]] || return 1
	done
}

# find_bindir prints the directory of the server binaries and fails when there is none.
find_bindir() {
	local dir
	if [[ -n "${PG_BINDIR:-}" ]]; then
		if has_server_binaries "$PG_BINDIR"; then
			printf '%s\n' "$PG_BINDIR"
			return 0
		fi
		echo "ensure-postgres: PG_BINDIR=$PG_BINDIR does not contain initdb, pg_ctl and postgres;" \
			"point it at the directory that does, or unset it" >&2
		exit 1
	fi
	if command -v pg_config >/dev/null 2>&1; then
		dir=$(pg_config --bindir 2>/dev/null || true)
		if has_server_binaries "$dir"; then
			printf '%s\n' "$dir"
			return 0
		fi
	fi
	# Newest major version first; sort -V orders 9.6 before 10.
	while IFS= read -r dir; do
		if has_server_binaries "$dir"; then
			printf '%s\n' "$dir"
			return 0
		fi
	done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -rV)
	if dir=$(command -v initdb 2>/dev/null); then
		dir=$(dirname "$(readlink -f "$dir")")
		if has_server_binaries "$dir"; then
			printf '%s\n' "$dir"
			return 0
		fi
	fi
	return 1
}

if find_bindir >/dev/null; then
	exit 0
fi

install_cmd=(apt-get install -y --no-install-recommends postgresql)
if [[ $(id -u) -eq 0 ]]; then
	sudo_cmd=()
elif command -v sudo >/dev/null 2>&1; then
	sudo_cmd=(sudo)
else
	echo "ensure-postgres: the PostgreSQL server binaries (initdb, pg_ctl, postgres) are missing." >&2
	echo "Install them as root, then run this again:" >&2
	echo "  apt-get update && ${install_cmd[*]}" >&2
	exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
	echo "ensure-postgres: the PostgreSQL server binaries are missing and apt-get is not available;" \
		"install the PostgreSQL server with this system's package manager, or set PG_BINDIR" >&2
	exit 1
fi

echo "ensure-postgres: installing the PostgreSQL server package with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" "${install_cmd[@]}" -qq >/dev/null

if ! bindir=$(find_bindir); then
	echo "ensure-postgres: apt-get installed postgresql, but initdb, pg_ctl and postgres are still" \
		"not found; set PG_BINDIR to their directory" >&2
	exit 1
fi
echo "ensure-postgres: PostgreSQL server binaries are in $bindir" >&2
