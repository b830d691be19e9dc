#!/usr/bin/env bash
# Regenerates the Python code for the wire contract into the SDK (which ships it to both
# sides). The generated files are committed so that the SDK installs without grpcio-tools;
# tests/sdk/test_proto.py fails when they are stale.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../sdk"
python -m grpc_tools.protoc -I "$here" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$here/cortexbox/model/v1/model_service.proto" \
  "$here/cortexbox/inference/v2/grpc_predict_v2.proto"
