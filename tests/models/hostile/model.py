"""A model that misbehaves on purpose, to test the orchestrator's sandbox and diagnosis.

The behaviour is read from the file MODE next to this one, which each test writes before
building its image, so every misbehaviour is a real image run in a real container.
"""

import os
import pathlib
import time

import numpy as np

from cortexbox.sdk import Model, Output

MODE = (pathlib.Path(__file__).parent / "MODE").read_text().strip()


class Hostile(Model):
    model_id = f"hostile-{MODE}"
    max_batch_size = 4

    def load(self):
        if MODE == "crash_on_load":
            raise RuntimeError("weights are corrupt (on purpose)")

    def layers(self):
        return [Output("features", (16,))]

    def activations(self, stimuli, layers):
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


def sandbox_facts() -> np.ndarray:
    """What the sandbox allows, measured from inside, as 16 numbers (see tests/test_sandbox.py)."""
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
        float(fields["NoNewPrivs"].strip()),
        float(os.path.exists("/var/run/docker.sock")),
        float(len(os.listdir("/run/cortexbox"))),
    ]
    return np.array(facts + [0.0] * (16 - len(facts)), dtype=np.float32)


# -- attacks on the wire (tests/test_hostile_wire.py) live in wire_attacks.py: a server of their own, or another Model
import wire_attacks  # noqa: E402

Hostile = wire_attacks.replace(MODE, Hostile)
