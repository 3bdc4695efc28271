#!/usr/bin/env bash
# Installs the project's pinned tools into ./.bin with `go install`, skipping each tool whose
# binary already reports the pinned version. The version check reads the module version that
# `go install` embeds in the binary (`go version -m`), because some tools, grpcurl among them,
# print no version of their own when built this way.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin_dir="$PWD/.bin"

# Each line: binary name, package path, module path, version.
tools=(
	"buf github.com/bufbuild/buf/cmd/buf github.com/bufbuild/buf v1.75.0"
	"protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/protobuf v1.36.12"
	"protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2"
	"staticcheck honnef.co/go/tools/cmd/staticcheck honnef.co/go/tools v0.8.2"
	"grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl github.com/fullstorydev/grpcurl v1.9.4"
)

# installed_version BINARY MODULE prints the version of MODULE that BINARY was built from.
installed_version() {
	local binary=$1 module=$2
	[[ -x "$binary" ]] || return 0
	go version -m "$binary" 2>/dev/null | awk -v module="$module" '$1 == "mod" && $2 == module { print $3 }'
}

mkdir -p "$bin_dir"
for tool in "${tools[@]}"; do
	read -r name package module version <<<"$tool"
	if [[ "$(installed_version "$bin_dir/$name" "$module")" == "$version" ]]; then
		continue
	fi
	echo "install-tools: installing $name $version" >&2
	GOBIN="$bin_dir" go install "$package@$version"
	if [[ "$(installed_version "$bin_dir/$name" "$module")" != "$version" ]]; then
		echo "install-tools: $bin_dir/$name does not report $module $version after go install" >&2
		exit 1
	fi
done
