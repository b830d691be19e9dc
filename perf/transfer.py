"""Chunked tensor transfer through cortexbox.model.v1 versus a plain unix socket.

The model server runs in its own process (as in a container) and returns the same
preallocated array for every batch, so the measurement is the transport alone: SDK
chunking + gRPC + the orchestrator's validating receiver. The baseline sends the same
number of bytes over a plain unix socket between two processes (sendall / recv_into).

    python perf/transfer.py [--gib 2] [--chunk-mib 1]

Target (issue 2): gRPC throughput at least 25 % of the plain socket's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time

import numpy as np

FEATURES = 256 * 1024  # 1 MiB of float32 per stimulus
BATCH = 16


def _serve(address: str, chunk: int) -> None:
    from cortexbox.sdk import Model, Output
    from cortexbox.sdk import serve

    block = np.ones((BATCH, FEATURES), dtype=np.float32)

    class Blob(Model):
        model_id = "blob"
        max_batch_size = BATCH

        def layers(self):
            return [Output("blob", (FEATURES,))]

        def activations(self, stimuli, layers):
            return {"blob": block[: len(stimuli)]}

    serve(Blob(), address, max_chunk_bytes=chunk)


def grpc_throughput(n_bytes: int, chunk: int) -> dict:
    from cortexbox.orchestrator.client import ModelClient

    tmp = tempfile.mkdtemp()
    address = f"unix://{tmp}/blob.sock"
    proc = mp.get_context("spawn").Process(target=_serve, args=(address, chunk), daemon=True)
    proc.start()
    try:
        client = ModelClient(address)
        client.wait_until_serving(30)
        info = client.info()
        n = n_bytes // (FEATURES * 4)
        ids = [f"s{i}" for i in range(n)]
        pixels = np.zeros((1, 1, 3), np.uint8)
        best = None
        for _ in range(3):
            result = client.run(info, ((sid, pixels) for sid in ids), ids, layers=["blob"], timeout_s=600)
            rate = result.bytes_received / result.wall_s / 2**20
            best = rate if best is None else max(best, rate)
            del result
        client.close()
        return {"bytes": n * FEATURES * 4, "MiB_per_s": round(best, 1), "chunk_bytes": chunk}
    finally:
        proc.terminate()
        proc.join(5)


def _socket_sender(path: str, n_bytes: int, chunk: int) -> None:
    payload = np.ones(chunk, dtype=np.uint8).tobytes()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        sent = 0
        while sent < n_bytes:
            s.sendall(payload)
            sent += len(payload)


def socket_throughput(n_bytes: int, chunk: int) -> dict:
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "plain.sock")
    best = None
    for _ in range(3):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        proc = mp.get_context("spawn").Process(target=_socket_sender, args=(path, n_bytes, chunk), daemon=True)
        t0 = time.perf_counter()
        proc.start()
        conn, _ = server.accept()
        buffer = bytearray(chunk)
        view = memoryview(buffer)
        received = 0
        while received < n_bytes:
            got = conn.recv_into(view)
            if not got:
                break
            received += got
        wall = time.perf_counter() - t0
        conn.close()
        server.close()
        os.unlink(path)
        proc.join(5)
        rate = received / wall / 2**20
        best = rate if best is None else max(best, rate)
    return {"bytes": n_bytes, "MiB_per_s": round(best, 1), "chunk_bytes": chunk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="bytes per measurement, in GiB")
    parser.add_argument("--chunk-mib", type=float, default=1.0)
    args = parser.parse_args()
    n_bytes = int(args.gib * 2**30)
    chunk = int(args.chunk_mib * 2**20)
    plain = socket_throughput(n_bytes, chunk)
    grpc_ = grpc_throughput(n_bytes, chunk)
    report = {"plain_unix_socket": plain, "cortexbox_grpc": grpc_, "ratio": round(grpc_["MiB_per_s"] / plain["MiB_per_s"], 3)}
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
