"""The generated code in the SDK matches proto/, and the contract keeps its v1 promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cortexbox.model.v1 import model_service_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
#: Every .proto of proto/ whose Python code the SDK carries (ours, and the Open Inference Protocol's).
PROTOS = ("cortexbox/model/v1/model_service.proto", "cortexbox/inference/v2/grpc_predict_v2.proto")


@pytest.mark.parametrize("source", PROTOS)
def test_generated_code_is_current(tmp_path, source):
    proto = REPO / "proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(proto), f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", str(proto / source)],
        check=True,
    )
    stem = source.removesuffix(".proto")
    for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
        fresh = (tmp_path / f"{stem}{suffix}").read_text()
        assert fresh == (REPO / "sdk" / f"{stem}{suffix}").read_text(), f"{stem}{suffix} is stale: run proto/generate.sh"


def test_generate_sh_makes_every_proto():
    script = (REPO / "proto" / "generate.sh").read_text()
    assert all(f'"$here/{source}"' in script for source in PROTOS)


def test_every_enum_has_an_unspecified_zero():
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        assert enum.values_by_number[0].name.endswith("UNSPECIFIED"), enum.name


def test_the_shared_memory_path_took_only_its_reserved_numbers():
    """v1.2 placed the shared-memory fields in the room v1 reserved for them; the rest stays free."""
    header = pb.DESCRIPTOR.message_types_by_name["TensorHeader"]
    config = pb.DESCRIPTOR.message_types_by_name["RunConfig"]
    assert {f.number for f in header.fields} & set(range(8, 16)) == {header.fields_by_name["shared_memory"].number} == {8}
    assert {f.number for f in config.fields} & set(range(6, 10)) == {config.fields_by_name["shared_memory"].number} == {7}
    assert header.fields_by_name["shared_memory"].message_type.name == "SharedMemoryBlock"
    assert config.fields_by_name["shared_memory"].message_type.name == "SharedMemoryOffer"
