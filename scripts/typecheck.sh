#!/usr/bin/env bash
# mypy on the SDK and the benchmarks. Both install under the `cortexbox` namespace from folders named otherwise
# (sdk/cortexbox/sdk, benchmarks/), which mypy cannot follow through setuptools' editable finder, so it checks
# them through a throwaway tree of links laid out as the installed namespace.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/cortexbox"
ln -s "$repo/sdk/cortexbox/sdk" "$tree/cortexbox/sdk"
ln -s "$repo/sdk/cortexbox/model" "$tree/cortexbox/model"
ln -s "$repo/sdk/cortexbox/inference" "$tree/cortexbox/inference"
ln -s "$repo/benchmarks" "$tree/cortexbox/benchmarks"
cd "$tree"
"$repo/.venv/bin/mypy" --config-file "$repo/pyproject.toml" cortexbox/sdk cortexbox/benchmarks
