"""Attacks on the wire, for tests/orchestrator/test_hostile_wire.py (issue 11), in the hostile image.

`replace(MODE, Hostile)` (called at the end of model.py) leaves other modes alone. Modes in
SERVERS bypass the SDK: this module runs its own gRPC server from the generated stubs and never
returns. Modes in MODELS are SDK models that declare or send what a hostile author would.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent import futures

import numpy as np

SERVERS = ("swap_socket", "flood_progress")
MODELS = ("float64_wide", "over_budget", "evil_id", "evil_text")

#: float64_wide: features per stimulus, and stimuli per tensor (one tensor for a whole test run).
WIDE_FEATURES = 1 << 20
WIDE_BATCH = 64


def replace(mode: str, hostile: type) -> type:
    if mode in SERVERS:
        serve_attacker(mode)  # never returns
    if mode in MODELS:
        return _model(mode, hostile)
    return hostile


# -- SDK models ----------------------------------------------------------------------------------


def _model(mode: str, hostile: type) -> type:
    from cortexbox.sdk import Output

    class Attacker(hostile):
        model_id = f"hostile-{mode}"
        max_batch_size = WIDE_BATCH if mode == "float64_wide" else 4
        if mode == "evil_id":
            model_id = "alexnet\x1b]0;pwned\x07\x1b[2J"  # a terminal escape in the id
        if mode == "evil_text":
            description = "\x1b[31mA" + "A" * 50_000_000  # 50 MB, with an escape
            metadata = {"note": "\x1b[2J" + "x" * 100_000}

        def layers(self):
            if mode == "float64_wide":
                return [Output("features", (WIDE_FEATURES,), dtype="float64")]
            if mode == "over_budget":  # within the per-stimulus ceiling, far over any run's budget
                return [Output("features", (50_000_000,), dtype="float64")]
            return super().layers()

        def activations(self, stimuli, layers):
            if mode == "float64_wide":
                # row i holds i + 0.5 (exact in float32): the client must convert, not reinterpret
                return {"features": np.stack([np.full(WIDE_FEATURES, s.pixels[0, 0, 0] + 0.5) for s in stimuli])}
            if mode == "evil_text":
                raise RuntimeError("\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J" + "E" * 1_000_000)  # clipboard write, clear screen
            return super().activations(stimuli, layers)

    return Attacker


# -- servers of their own ------------------------------------------------------------------------


def serve_attacker(mode: str) -> None:
    """A ModelService written against the generated stubs, as an attacker who controls the whole
    container would: it answers the handshake honestly (it holds the nonce) and then misbehaves."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from cortexbox.model.v1 import model_service_pb2 as pb
    from cortexbox.model.v1 import model_service_pb2_grpc as pb_grpc
    from cortexbox.sdk import wire

    path = os.environ[wire.ENV_SOCKET]
    nonce = os.environ[wire.ENV_NONCE]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    info = pb.ModelInfo(
        protocol_version=wire.PROTOCOL_VERSION,
        model_id=f"hostile-{mode}",
        model_version="1",
        modality=pb.MODALITY_IMAGE,
        layers=[pb.OutputSpec(name="features", kind=pb.OUTPUT_KIND_LAYER, data_type=pb.DATA_TYPE_FLOAT32, shape=[16])],
        visual_degrees=8,
        limits=pb.Limits(max_batch_size=4, max_chunk_bytes=wire.DEFAULT_CHUNK_BYTES),
    )

    def swap() -> None:
        """After GetModelInfo: close every connection, and leave in the socket's place a link
        to another server's socket next to our run folder, where the orchestrator reconnects."""
        time.sleep(0.3)
        server.stop(0)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink("../victim.sock", path)
        print("swapped the socket for a link to ../victim.sock", flush=True)

    class Attacker(pb_grpc.ModelServiceServicer):
        def Handshake(self, request, context):
            return pb.HandshakeResponse(proof=wire.handshake_proof(nonce, request.challenge))

        def GetModelInfo(self, request, context):
            if mode == "swap_socket":
                threading.Thread(target=swap, daemon=True).start()
            return info

        def Run(self, request_iterator, context):
            next(request_iterator)  # the RunConfig
            if mode == "flood_progress":  # empty progress, as fast as gRPC takes it
                empty = pb.RunResponse(progress=pb.Progress())
                while context.is_active():
                    yield empty

    pb_grpc.add_ModelServiceServicer_to_server(Attacker(), server)
    checker = health.HealthServicer()
    checker.set(wire.SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(f"unix://{path}")
    server.start()
    server.wait_for_termination()
    time.sleep(3600)  # stay alive: the run must fail for what it met on the wire, not for a crash
    os._exit(0)
