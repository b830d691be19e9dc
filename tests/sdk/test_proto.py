"""The generated code in the SDK matches proto/, and the contract keeps its v1 promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cortexbox.model.v1 import model_service_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
GENERATED = REPO / "sdk" / "cortexbox" / "model" / "v1"


def test_generated_code_is_current(tmp_path):
    proto = REPO / "proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(proto), f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", str(proto / "cortexbox" / "model" / "v1" / "model_service.proto")],
        check=True,
    )
    for name in ("model_service_pb2.py", "model_service_pb2.pyi", "model_service_pb2_grpc.py"):
        fresh = (tmp_path / "cortexbox" / "model" / "v1" / name).read_text()
        assert fresh == (GENERATED / name).read_text(), f"{name} is stale: run proto/generate.sh"


def test_every_enum_has_an_unspecified_zero():
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        assert enum.values_by_number[0].name.endswith("UNSPECIFIED"), enum.name


def test_room_for_the_shared_memory_path_is_reserved():
    header = pb.DESCRIPTOR.message_types_by_name["TensorHeader"]
    config = pb.DESCRIPTOR.message_types_by_name["RunConfig"]
    assert not set(range(8, 16)) & {f.number for f in header.fields}
    assert not set(range(6, 10)) & {f.number for f in config.fields}
