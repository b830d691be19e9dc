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

SERVERS = ("swap_socket", "flood_progress", "shm_liar")
MODELS = ("float64_wide", "over_budget", "evil_id", "evil_text")

#: float64_wide: features per stimulus, and stimuli per tensor (one tensor for a whole test run).
WIDE_FEATURES = 1 << 20
WIDE_BATCH = 64


#: shm_liar: the lie of each run is its RunConfig.run_id (so one container tells them all).
SHM_LIES = ("outside", "control_page", "misaligned", "short", "rewrite", "unoffered", "string", "resize")


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
    if mode == "shm_liar":
        pb_grpc.add_ModelServiceServicer_to_server(shm_liar(os.path.dirname(path), nonce), server)
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

    if mode != "shm_liar":
        pb_grpc.add_ModelServiceServicer_to_server(Attacker(), server)
    checker = health.HealthServicer()
    checker.set(wire.SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(f"unix://{path}")
    server.start()
    server.wait_for_termination()
    time.sleep(3600)  # stay alive: the run must fail for what it met on the wire, not for a crash
    os._exit(0)


def shm_liar(socket_dir: str, nonce: str | None):
    """A servicer that takes the shared-memory area honestly and then lies about what it wrote there,
    one lie per run, named by the run's run_id (SHM_LIES). It reads all stimuli first, then sends one
    tensor for them all: `features` (16 float32 per stimulus, the value 1.5), as the lie bends it."""
    import mmap

    from cortexbox.model.v1 import model_service_pb2 as pb
    from cortexbox.model.v1 import model_service_pb2_grpc as pb_grpc
    from cortexbox.sdk import wire

    info = pb.ModelInfo(
        protocol_version=wire.PROTOCOL_VERSION,
        model_id="hostile-shm_liar",
        model_version="1",
        modality=pb.MODALITY_IMAGE,
        layers=[pb.OutputSpec(name="features", kind=pb.OUTPUT_KIND_LAYER, data_type=pb.DATA_TYPE_FLOAT32, shape=[16])],
        behaviours=[pb.OutputSpec(name="word", kind=pb.OUTPUT_KIND_BEHAVIOUR, data_type=pb.DATA_TYPE_STRING, shape=[1])],
        visual_degrees=8,
        limits=pb.Limits(max_batch_size=1000, max_chunk_bytes=wire.DEFAULT_CHUNK_BYTES),
        capabilities=[wire.CAPABILITY_SHARED_MEMORY],
    )

    class Liar(pb_grpc.ModelServiceServicer):
        def Handshake(self, request, context):
            return pb.HandshakeResponse(proof=wire.handshake_proof(nonce, request.challenge) if nonce else b"")

        def GetModelInfo(self, request, context):
            return info

        def Run(self, request_iterator, context):
            config = next(request_iterator).config
            lie = config.run_id
            ids = [r.stimulus.id for r in request_iterator]
            offer = config.shared_memory
            area, refused = None, []
            if config.HasField("shared_memory"):
                fd = wire.receive_area(socket_dir, offer.socket_name, 5)
                area = mmap.mmap(fd, offer.area_bytes)
                if lie == "resize":  # the seals refuse both; a shrunk area would crash a reader with SIGBUS
                    for size in (wire.SHM_CONTROL_BYTES, offer.area_bytes * 2):
                        try:
                            os.ftruncate(fd, size)
                        except OSError as e:
                            refused.append(e.errno)
                os.close(fd)
            name, data_type = ("word", pb.DATA_TYPE_STRING) if lie == "string" else ("features", pb.DATA_TYPE_FLOAT32)
            values = np.full((len(ids), 16), 1.5, np.float32)
            if lie == "resize":
                values[:, : len(refused)] = refused  # the errno of each refusal
            raw = values.tobytes()
            offset = offer.control_bytes
            view = np.frombuffer(area, np.uint8) if area is not None else None
            if view is not None:
                view[offset : offset + len(raw)] = np.frombuffer(raw, np.uint8)
            checksum = wire.block_checksum(raw)
            length = len(raw)
            if lie == "outside":
                offset = offer.area_bytes  # aligned, but past the end: the area's last page holds no such block
            elif lie == "control_page":
                offset = 0
            elif lie == "misaligned":
                offset += 8
            elif lie == "short":
                length -= 4
            elif lie == "rewrite" and view is not None:  # announced as 1.5, then NaN before the client reads
                view[offset : offset + len(raw)] = np.frombuffer(np.full(len(raw) // 4, np.nan, np.float32).tobytes(), np.uint8)
            yield pb.RunResponse(header=pb.TensorHeader(
                tensor_id=0, name=name, kind=pb.OUTPUT_KIND_BEHAVIOUR if lie == "string" else pb.OUTPUT_KIND_LAYER,
                stimulus_ids=ids, data_type=data_type, shape=[len(ids), 16] if lie != "string" else [len(ids), 1],
                byte_size=len(raw), shared_memory=pb.SharedMemoryBlock(offset=offset, length=length, checksum=checksum),
            ))
            yield pb.RunResponse(summary=pb.RunSummary(run_id=config.run_id, stimuli=len(ids), tensors=1, bytes=len(raw)))

    return Liar()
