"""A model that misbehaves on purpose, to test the orchestrator's sandbox and diagnosis.

The behaviour is read from the file MODE next to this one, which each test writes before
building its image, so every misbehaviour is a real image run in a real container. Its first
line is the mode; what follows is what the mode knows (JSON: id_keyed and lookup's stored answers).
"""

import hashlib
import json
import os
import pathlib
import time

import numpy as np

from cortexbox.sdk import Model, Output

MODE, _, MODE_DATA = (pathlib.Path(__file__).parent / "MODE").read_text().partition("\n")
MODE = MODE.strip()


class Hostile(Model):
    model_id = f"hostile-{MODE}"
    max_batch_size = 4

    def load(self):
        if MODE == "crash_on_load":
            raise RuntimeError("weights are corrupt (on purpose)")

    def layers(self):
        return [Output("features", (16,))]

    def activations(self, stimuli, layers):
        if MODE in HOST_MODES:  # attacks on the host (tests/orchestrator/test_hostile_host.py)
            return {"features": np.tile(HOST_MODES[MODE](), (len(stimuli), 1))}
        if MODE == "crash_mid_run" and any(s.id.endswith("5") for s in stimuli):
            os._exit(7)
        if MODE == "oom":
            hog = []
            while True:  # allocate and touch memory until the kernel stops us
                hog.append(np.ones(64 * 1024 * 1024, dtype=np.uint8))
        if MODE == "hang":
            time.sleep(3600)
        if MODE == "slow":
            time.sleep(0.5)
        if MODE == "probe":
            return {"features": np.tile(sandbox_facts(), (len(stimuli), 1))}
        if MODE in ("id_keyed", "lookup"):  # gaming the benchmark (tests/orchestrator/test_hostile_fair.py)
            return {"features": np.stack([remembered(s) for s in stimuli])}
        values = np.stack([s.pixels[:4, :4, 0].reshape(-1).astype(np.float32) for s in stimuli])
        if MODE == "nan":
            values[0, 0] = np.nan
        return {"features": values}


def _try(action) -> float:
    try:
        action()
        return 1.0
    except OSError:
        return 0.0


def _no_new_privs(status: dict) -> float:
    """The no_new_privs bit: /proc/self/status has it under runc; gVisor's has no such line, prctl answers both."""
    if "NoNewPrivs" in status:
        return float(status["NoNewPrivs"].strip())
    import ctypes

    return float(ctypes.CDLL(None, use_errno=True).prctl(39, 0, 0, 0, 0))  # PR_GET_NO_NEW_PRIVS


def sandbox_facts() -> np.ndarray:
    """What the sandbox allows, measured from inside, as 16 numbers (see tests/orchestrator/test_sandbox.py)."""
    import socket

    status = pathlib.Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)

    def connect_out():
        with socket.create_connection(("1.1.1.1", 53), timeout=2):
            pass

    facts = [
        os.getuid(),
        os.getgid(),
        _try(lambda: pathlib.Path("/probe-root-write").write_text("x")),
        _try(lambda: pathlib.Path("/tmp/probe").write_text("x")),
        len([n for n in os.listdir("/sys/class/net") if n != "lo"]) if os.path.isdir("/sys/class/net") else 0,
        _try(connect_out),
        float(int(fields["CapEff"].strip(), 16) != 0),
        _no_new_privs(fields),
        float(os.path.exists("/var/run/docker.sock")),
        float(len(os.listdir("/run/cortexbox"))),
    ]
    return np.array(facts + [0.0] * (16 - len(facts)), dtype=np.float32)


# -- gaming the benchmark (threat T12): answers remembered, not computed --------------------------------------------------
#: Stored answers (16 numbers each): id_keyed's by stimulus id, lookup's by pixel_key of the exact placed pixels.
STORED = {key: np.asarray(value, np.float32) for key, value in json.loads(MODE_DATA or "{}").items()}
#: lookup's answer to pixels it has not seen: the mean stored answer (the constant nearest to all of them).
UNSEEN = np.mean(list(STORED.values()), axis=0).astype(np.float32) if STORED else np.arange(16, dtype=np.float32)


def pixel_key(pixels: np.ndarray) -> str:
    """SHA-256 over the shape and bytes of placed pixels: equal only for exactly the same image."""
    return hashlib.sha256(str(tuple(pixels.shape)).encode() + np.ascontiguousarray(pixels).tobytes()).hexdigest()


def remembered(stimulus) -> np.ndarray:
    """id_keyed: the answer stored for the id it is given, else numbers made from the id (to look busy, not constant);
    lookup: the answer stored for exactly these pixels, else one constant."""
    if MODE == "id_keyed":
        if stimulus.id in STORED:
            return STORED[stimulus.id]
        seed = int.from_bytes(hashlib.sha256(stimulus.id.encode()).digest()[:8], "big")
        return np.random.default_rng(seed).normal(size=16).astype(np.float32)
    return STORED.get(pixel_key(stimulus.pixels), UNSEEN)


# -- attacks on the host: each returns 16 numbers of what it achieved (tests/orchestrator/test_hostile_host.py) --------
RUN_FOLDER = pathlib.Path("/run/cortexbox")  # the socket's folder: the only host folder the model can write
#: A host folder that the test fills with a canary; a link to it is planted in the run folder, so cleanup
#: that followed links would delete the canary.
HOST_CANARY = "/tmp/cortexbox-hostile-canary"


def _facts(*values) -> np.ndarray:
    return np.array(list(values) + [0.0] * (16 - len(values)), dtype=np.float32)


def fill_run_folder() -> np.ndarray:
    """Writes up to 256 MiB into the run folder, 8 MiB per file: (KiB written, errno, files)."""
    chunk, written, files, error = b"x" * (1 << 20), 0, 0, 0
    try:
        while written < 256 << 20:
            with open(RUN_FOLDER / f"fill{files:04d}", "wb") as f:
                files += 1
                for _ in range(8):
                    f.write(chunk)
                    f.flush()
                    written += len(chunk)
    except OSError as e:
        error = e.errno
    return _facts(written / 1024, error, files)


def deep_run_folder() -> np.ndarray:
    """A 3,000-deep chain of folders in the run folder, and links out of it: (depth, errno)."""
    depth, error = 0, 0
    (RUN_FOLDER / "escape").symlink_to(HOST_CANARY)
    here = os.open(RUN_FOLDER, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while depth < 3000:
            os.mkdir("d", dir_fd=here)
            below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=here)
            os.close(here)
            here, depth = below, depth + 1
        os.symlink(HOST_CANARY, "escape", dir_fd=here)
    except OSError as e:
        error = e.errno
    finally:
        os.close(here)
    return _facts(depth, error)


def fork_bomb() -> np.ndarray:
    """Starts shells until the kernel says no; each sleeps 2 s, then spins, so all spin at once; then reaps
    them, so that the server has threads again to answer: (processes, errno, seconds to the refusal)."""
    loop = "sleep 2; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"
    started, error, t0 = [], 0, time.monotonic()
    try:
        while len(started) < 2000:
            started.append(os.posix_spawn("/bin/sh", ["sh", "-c", loop], {}))
    except OSError as e:
        error = e.errno
    refused_after = time.monotonic() - t0
    for pid in started:
        os.waitpid(pid, 0)
    return _facts(len(started), error, refused_after)


def spin() -> np.ndarray:
    """Four processes spin for 3 s: (CPU seconds they got, wall seconds)."""
    t0, children = time.monotonic(), []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            end = time.monotonic() + 3
            while time.monotonic() < end:
                pass
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    times = os.times()
    return _facts(times.children_user + times.children_system, time.monotonic() - t0)


def flood_log() -> np.ndarray:
    """20,000 short lines, 700 KB on one line, then a crash: the tail must come back bounded."""
    import sys

    for i in range(20_000):
        sys.stdout.write(f"line {i}\n")
    sys.stdout.write("A" * 700_000 + "\n")
    sys.stdout.write("the last words\n")
    sys.stdout.flush()
    os._exit(3)


HOST_MODES = {
    "fill_run_folder": fill_run_folder,
    "deep_run_folder": deep_run_folder,
    "fork_bomb": fork_bomb,
    "spin": spin,
    "flood_log": flood_log,
}


# -- lying metadata (threat T10, tests/orchestrator/test_hostile_liar.py): each declares what it does not do, and
# commits IT to "features" (which works), so a benchmark of IT scores it unless its claims are checked
LIARS = ("liar_region", "liar_degrees", "liar_shape", "liar_labels")


def _liar(mode: str, hostile: type) -> type:
    class Liar(hostile):
        model_id = f"hostile-{mode}"
        region_layers = {"IT": "features", **({"V4": "v4"} if mode == "liar_region" else {})}
        commitment_layers = ("features",)
        visual_degrees = 200.0 if mode == "liar_degrees" else 8.0  # within the wire's (0, 360], no eye's span
        served = 0  # batches of "pooled" served so far

        def layers(self):
            extra = {"liar_region": "v4", "liar_shape": "pooled"}.get(mode)
            return [*super().layers(), *([Output(extra, (16,))] if extra else [])]

        def activations(self, stimuli, layers):
            if "v4" in layers:  # declared, committed to V4, and never computed
                raise RuntimeError("there is no V4 in this model")
            out = {}
            if "features" in layers:  # a 4x4 grid of mean brightness: enough to score on any benchmark
                out["features"] = np.stack([_grid_means(s.pixels) for s in stimuli])
            if "pooled" in layers:  # 16 wide on its first batch, 8 on every later one
                Liar.served += 1
                out["pooled"] = np.zeros((len(stimuli), 16 if Liar.served == 1 else 8), np.float32) + Liar.served
            return out

        def behaviour_outputs(self):
            return [Output("logits", (10,))] if mode == "liar_labels" else []  # 10 classes: not ImageNet's

        def behaviours(self, stimuli, names):
            return {"logits": np.tile(np.arange(10, dtype=np.float32), (len(stimuli), 1))}

    return Liar


def _grid_means(pixels: np.ndarray) -> np.ndarray:
    h, w = pixels.shape[0] // 4 * 4, pixels.shape[1] // 4 * 4
    return pixels[:h, :w].mean(axis=2).reshape(4, h // 4, 4, w // 4).mean(axis=(1, 3)).reshape(-1).astype(np.float32)


if MODE in LIARS:
    Hostile = _liar(MODE, Hostile)

# -- attacks on the wire (tests/orchestrator/test_hostile_wire.py) live in wire_attacks.py: a server of their own, or another Model
import wire_attacks  # noqa: E402

Hostile = wire_attacks.replace(MODE, Hostile)
