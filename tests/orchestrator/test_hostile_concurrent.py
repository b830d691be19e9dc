"""A normal scoring run beside bombs (issue 11, done-when): a fork bomb, a memory bomb and a disk filler are
scored by `cortexbox score` on the same host at the same time as the pixels template, which must finish, in
bounded time, with exactly the score it has alone; afterwards no container and no run folder is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cortexbox.orchestrator.runtime import scope_filter


pytestmark = pytest.mark.docker

BENCHMARK = "Kriegeskorte2008.hIT-rdm"  # 92 images: the hostile modes run their attack on every batch of 4
BOMBS = {"fork_bomb": "1g", "oom": "512m", "fill_run_folder": "512m"}  # mode -> the container's memory


def score(image: str, home: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "CORTEXBOX_HOME": str(home), "CORTEXBOX_RUN_DIR": str(run_dir)}
    return subprocess.Popen([sys.executable, "-m", "cortexbox.orchestrator.cli", "score", "--model", image,
                             "--benchmark", BENCHMARK, "--no-cache", "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen, timeout_s: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()  # its own handler removes its container
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"still running after {timeout_s} s: {proc.args}") from None
    return proc.returncode, out, err


def test_a_normal_run_beside_bombs_finishes_with_its_normal_score(docker_client, template_image, hostile_image, tmp_path):
    pixels = template_image("pixels")
    bombs = {mode: hostile_image(mode) for mode in BOMBS}
    run_dir = tmp_path / "runs"

    t0 = time.monotonic()
    code, out, err = finish(score(pixels, tmp_path / "alone", run_dir), 300)
    assert code == 0, err[-2000:]
    alone, alone_s = json.loads(out), time.monotonic() - t0

    procs = {mode: score(image, tmp_path / mode, run_dir, "--memory", BOMBS[mode]) for mode, image in bombs.items()}
    try:
        deadline = time.monotonic() + 120
        while len(docker_client.containers.list(filters=scope_filter())) < len(bombs) and time.monotonic() < deadline:
            time.sleep(0.2)  # the bombs are going off before the normal run starts
        t0 = time.monotonic()
        code, out, err = finish(score(pixels, tmp_path / "beside", run_dir), 300)
        beside_s, load = time.monotonic() - t0, os.getloadavg()[0]
        # the memory bomb and the disk filler fail on their own; the fork bomb would go on for every batch of 4:
        # stopped like a user would (SIGTERM: the CLI cancels its run and removes its container)
        ended = {mode: finish(proc, 120) for mode, proc in procs.items() if mode != "fork_bomb"}
        if procs["fork_bomb"].poll() is None:
            procs["fork_bomb"].send_signal(signal.SIGTERM)
        ended["fork_bomb"] = finish(procs["fork_bomb"], 60)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(60)
    assert code == 0, err[-2000:]
    beside = json.loads(out)
    assert (beside["ceiled"], beside["raw"], beside["layer"]) == (alone["ceiled"], alone["raw"], alone["layer"])
    for mode, (code, _, err) in ended.items():  # each bomb ends as a classified failed run, never a traceback
        assert code in ((1, 130) if mode == "fork_bomb" else (1,)) and "Traceback" not in err, f"{mode}: exit {code}\n{err[-1500:]}"
        print(f"{mode}: {err.strip().splitlines()[-1][:200]}")
    assert "out_of_memory" in ended["oom"][2], ended["oom"][2][-1500:]
    assert "bad_output" in ended["fill_run_folder"][2]  # it ran, then its constant outputs could not be scored
    assert not docker_client.containers.list(all=True, filters=scope_filter()), "a container survived"
    assert not list(run_dir.iterdir()), f"run folders left: {list(run_dir.iterdir())}"
    assert str(run_dir) + os.sep not in Path("/proc/mounts").read_text()
    print(f"pixels on {BENCHMARK}: {alone_s:.1f} s alone, {beside_s:.1f} s beside three bombs (1-min load {load:.1f})")
