"""The evil zoo, measured (issue 11): each mode of tests/models/hostile once through a real sandboxed container,
with its outcome class, time to fail and host impact, under one container runtime.

    python perf/hostile_zoo.py --runtime runc  --save perf/results/hostile_zoo_runc.json
    DOCKER_HOST=... python perf/hostile_zoo.py --runtime runsc --save perf/results/hostile_zoo_runsc.json
    python perf/hostile_zoo.py --report perf/results/hostile_zoo_runc.json perf/results/hostile_zoo_runsc.json

Each mode runs in a child process, so that the orchestrator's peak RSS is that mode's own; the parent samples the
host's load while it runs and checks afterwards that no container and no run folder (or tmpfs) is left.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: mode -> (stimuli, run timeout s, memory limit MiB, extra environment). Every mode of the hostile image.
MODES: dict[str, tuple[int, float, int, dict]] = {
    "normal": (8, 60, 512, {}),
    "probe": (1, 60, 512, {}),
    "crash_on_load": (8, 60, 512, {}),
    "crash_mid_run": (8, 60, 512, {}),
    "oom": (8, 60, 384, {}),
    "hang": (8, 120, 512, {"CORTEXBOX_WIRE": "stall_timeout_s=3"}),
    "slow": (80, 6, 512, {}),
    "nan": (8, 60, 512, {}),
    "fill_run_folder": (1, 120, 512, {}),
    "deep_run_folder": (1, 120, 512, {}),
    "fork_bomb": (1, 120, 512, {}),
    "spin": (1, 120, 512, {}),
    "flood_log": (1, 60, 512, {}),
    "swap_socket": (8, 30, 512, {}),
    "flood_progress": (8, 60, 512, {}),
    "float64_wide": (64, 300, 2048, {}),
    "over_budget": (64, 60, 512, {}),
    "evil_id": (8, 60, 512, {}),
    "evil_text": (4, 60, 512, {}),
    # not a bare run (KINDS): the scoring job with stored answers, every lie of one server, the conformance run
    "id_keyed": (92, 300, 512, {}),
    "lookup": (92, 300, 512, {}),
    "shm_liar": (8, 30, 512, {}),
    "liar_region": (6, 60, 512, {}),
    "liar_degrees": (6, 60, 512, {}),
    "liar_shape": (6, 60, 512, {}),
    "liar_labels": (6, 60, 512, {}),
    # <mode>/watch: the run folder without a tmpfs, as without root (runtime.RunDirWatch)
    "fill_run_folder/watch": (1, 120, 512, {"CORTEXBOX_SANDBOX": "run_dir_limit=watch"}),
    "deep_run_folder/watch": (1, 120, 512, {"CORTEXBOX_SANDBOX": "run_dir_limit=watch"}),
}
#: How a mode is run when not as one bare run of `features`: "score" (score_model on SCORED, the gaming attackers
#: with the answers they store), "lies" (one run per lie of the shared-memory liar), "conformance" (the check that
#: scoring runs first, orchestrator/conformance.py).
KINDS = {"id_keyed": "score", "lookup": "score", "shm_liar": "lies",
         **{m: "conformance" for m in ("liar_region", "liar_degrees", "liar_shape", "liar_labels")}}
SCORED = "Kriegeskorte2008.hIT-rdm"
SHM_LIES = ("outside", "control_page", "misaligned", "short", "rewrite", "unoffered", "string", "resize")


def one(mode: str, image: str, runtime: str) -> dict:
    """Runs `mode` once in this process: class, seconds, peak RSS, what the model reported."""
    import numpy as np

    from cortexbox.orchestrator.errors import ModelFailure
    from cortexbox.orchestrator.runtime import ContainerSession, SandboxLimits, docker_client

    n, timeout_s, memory_mib, _ = MODES[mode]
    limits = SandboxLimits.configured(memory_bytes=memory_mib * 1024**2, runtime=runtime)  # and $CORTEXBOX_SANDBOX
    kind = KINDS.get(mode)
    if kind == "score":
        return _scored(image, limits)
    docker = docker_client()
    session, record, t0 = None, {}, time.monotonic()
    try:
        session = ContainerSession(docker, image, limits=limits)
        ids = [f"s{i:03d}" for i in range(n)]
        items = [(sid, np.full((16, 16, 3), i, np.uint8)) for i, sid in enumerate(ids)]
        if kind == "conformance":
            from cortexbox.orchestrator import conformance

            record = {"class": "ok", **conformance.check(session)}
        elif kind == "lies":
            record = {"class": _lies(session, items, ids, timeout_s)}
        else:
            out = session.client.run(session.description, items, ids, layers=["features"], timeout_s=timeout_s)
            session.check_budgets()
            record = {"class": "ok", "facts": [round(float(x), 2) for x in out.outputs["features"][0][:6]]}
    except ModelFailure as e:
        e = session.diagnose(e) if session is not None else e
        record = {"class": e.failure.value, "message": e.message[:200]}
    finally:
        run_dir = session.run_dir if session is not None else None
        if session is not None:
            session.close()
    record["seconds"] = round(time.monotonic() - t0, 2)
    record["peak_rss_mib"] = _peak_rss_mib()
    record["run_dir_left"] = bool(run_dir and os.path.lexists(run_dir))
    return record


def _peak_rss_mib() -> int:
    """This process's own peak (VmHWM). Not getrusage's ru_maxrss: Linux keeps the larger of it and the parent's peak
    across fork and exec, so every child read at least the parent's size (the scored modes' stored answers: 521 MiB)."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return round(kib / 1024)


def _lies(session, items, ids, timeout_s: float) -> str:
    """Every lie of the shared-memory liar, one run each (its run_id names the lie): their classes, counted."""
    from collections import Counter

    from cortexbox.orchestrator.errors import ModelFailure

    from cortexbox.orchestrator.budgets import WireBudgets

    seen, budgets = Counter(), session.client.budgets
    for lie in SHM_LIES:
        kind = {"behaviours": ["word"]} if lie == "string" else {"layers": ["features"]}
        # unoffered: a block announced in a run that offered no area (as test_hostile_wire)
        session.client.budgets = WireBudgets(shared_memory_bytes=0) if lie == "unoffered" else budgets
        try:
            session.client.run(session.description, items, ids, timeout_s=timeout_s, run_id=lie, **kind)
            seen[f"{lie} accepted"] += 1
        except ModelFailure as e:
            seen[session.diagnose(e).failure.value] += 1
    return ", ".join(f"{what} x{count}" if count > 1 else what for what, count in seen.items())


def _scored(image: str, limits) -> dict:
    """score_model on SCORED, as `cortexbox score` (random ids, repeat probes, the conformance run first)."""
    from cortexbox.orchestrator.errors import ModelFailure
    from cortexbox.orchestrator.scoring import ScoreRequest, score_model

    t0 = time.monotonic()
    try:
        outcome = score_model(ScoreRequest(benchmark=SCORED, image=image, limits=limits))
        record = {"class": f"ok, raw {outcome.raw:.3f}"}
    except ModelFailure as e:
        record = {"class": e.failure.value, "message": e.message[:200]}
    record["seconds"] = round(time.monotonic() - t0, 2)
    record["peak_rss_mib"] = _peak_rss_mib()
    return record


def measure(mode: str, image: str, runtime: str, run_root: Path) -> dict:
    """`one` in a child process, with the host's peak 1-minute load and what was left behind."""
    from cortexbox.orchestrator.runtime import docker_client, scope_filter

    home = tempfile.mkdtemp(prefix="cbx-zoo-home-", dir="/tmp")  # a registry of its own (the scored modes)
    env = {**os.environ, **MODES[mode][3], "CORTEXBOX_RUN_DIR": str(run_root), "CORTEXBOX_SCOPE": "hostile-zoo",
           "CORTEXBOX_HOME": home}
    peak_load, done = [os.getloadavg()[0]], threading.Event()

    def sample():
        while not done.wait(0.5):
            peak_load.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc = subprocess.run([sys.executable, __file__, "--one", mode, "--image", image, "--runtime", runtime],
                          capture_output=True, text=True, env=env, timeout=600)
    done.set()
    sampler.join()
    shutil.rmtree(home, ignore_errors=True)
    try:
        record = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        record = {"class": f"harness error (exit {proc.returncode})", "message": proc.stderr[-300:]}
    os.environ["CORTEXBOX_SCOPE"] = "hostile-zoo"
    record["containers_left"] = len(docker_client().containers.list(all=True, filters=scope_filter()))
    record["folders_left"] = len(list(run_root.iterdir())) if run_root.exists() else 0
    with open("/proc/mounts") as f:
        record["mounts_left"] = sum(1 for line in f if line.split()[1].startswith(str(run_root) + os.sep))
    record["host_load_peak"] = round(max(peak_load), 1)
    return record


def build(docker, mode: str) -> str:
    from cortexbox.orchestrator import images

    mode = mode.split("/")[0]  # <mode>/watch runs <mode>'s image
    stored = ""
    if KINDS.get(mode) == "score":  # the answers the attacker stores (tests/orchestrator/test_hostile_fair.py)
        from tests.orchestrator.test_hostile_fair import best_answers

        answers = best_answers()
        stored = json.dumps(answers["by_id"] if mode == "id_keyed" else answers["by_pixels"]) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "hostile"
        shutil.copytree(REPO / "tests" / "models" / "hostile", project)
        (project / "MODE").write_text(mode + "\n" + stored)
        # not the tests' tags: both may run on one engine
        return images.build_model_image(docker, project, tag=f"cortexbox-zoo/hostile:{mode}").tag


THREATS = [  # (threat, modes of the zoo, tests that assert it: files under tests/orchestrator/ unless named)
    ("T1 read held-out data", ["probe"], "test_sandbox::test_the_sandbox_holds_from_inside (only the run folder is mounted, no docker.sock); "
     "test_hostile_host::test_asset_sources_are_confined_to_the_project_and_weight_folders, test_a_project_folder_must_not_hold_the_data"),
    ("T2 network", ["probe"], "test_sandbox::test_the_sandbox_holds_from_inside (no interface but lo, connect fails); "
     "test_hostile_host::test_a_build_has_no_network_and_bounded_memory"),
    ("T3 fork bomb", ["fork_bomb"], "test_hostile_host::test_a_fork_bomb_stops_at_a_pids_limit_sized_for_the_host; "
     "test_hostile_runsc::test_host_attacks_are_contained_under_runsc; test_hostile_concurrent"),
    ("T4 memory", ["oom", "float64_wide"], "test_sandbox::test_failures_are_classified_with_the_log[oom]; "
     "test_hostile_wire::test_float64_outputs_are_converted_while_streaming; test_hostile_concurrent"),
    ("T5 disk", ["fill_run_folder", "deep_run_folder", "fill_run_folder/watch", "deep_run_folder/watch", "flood_log"],
     "test_hostile_host::test_the_run_folder_has_a_total, test_cleanup_survives_a_deep_chain_and_never_follows_links, "
     "test_the_run_folder_has_a_total_without_root, test_the_watch_bounds_files_and_depth_and_never_follows_links, "
     "test_the_watch_counts_allocated_bytes_entries_and_no_links, test_the_log_tail_is_bounded_in_bytes_and_lines; "
     "test_hostile_runsc::test_the_watched_run_folder_stops_a_filler_under_runsc; test_hostile_concurrent"),
    ("T6 escalation", ["probe"], "test_sandbox::test_the_sandbox_holds_from_inside (uid 65534, CapEff 0, no_new_privs, read-only root)"),
    ("T7 hang / slow-loris", ["hang", "slow"], "test_hostile_wire::test_a_silent_model_is_stopped_by_the_watchdog, "
     "test_a_model_too_slow_for_its_deadline_is_stopped_early; test_sandbox::...[hang]"),
    ("T8 crash", ["crash_on_load", "crash_mid_run"], "test_sandbox::test_failures_are_classified_with_the_log[crash_*]"),
    ("T9 NaN, shapes, huge tensors", ["nan", "over_budget", "float64_wide"], "test_sandbox::...[nan]; "
     "test_hostile_wire::test_an_over_budget_output_shape_is_a_classified_failure; tests/sdk/test_protocol.py (chunks, dtypes, NaN per chunk)"),
    ("T10 lying metadata", ["liar_region", "liar_degrees", "liar_shape", "liar_labels", "evil_id", "evil_text"],
     "the conformance run (orchestrator/conformance.py: declared layers and behaviours answer on public stimuli at their shapes, "
     "regions name layers, visual degrees in 1-60, behaviours in their label spaces; before scoring, once per digest, and "
     "`cortexbox models check`): test_hostile_liar::test_a_liar_is_refused_before_it_is_scored[*] (each scored hIT before), "
     "test_the_cli_says_what_the_liar_lied_about_in_one_line, test_honest_templates_conform, test_a_broken_model_keeps_its_own_class; "
     "test_hostile_runsc::test_a_liar_is_refused_under_runsc; strings: test_hostile_wire::test_a_model_id_with_a_terminal_escape_is_refused, "
     "test_free_text_from_a_model_is_cut_and_cleaned"),
    ("T11 hijack another run's socket", ["swap_socket", "shm_liar"], "test_hostile_wire::test_a_socket_swapped_after_the_handshake_cannot_redirect_the_run, "
     "test_hostile_runsc::test_a_swapped_socket_cannot_redirect_the_run_under_runsc, "
     "test_hostile_host::test_a_model_that_ends_the_run_early_is_a_protocol_violation; "
     "tests/sdk/test_protocol.py (symlinked socket, missing nonce); shared-memory lies: test_hostile_wire (shm_liar), "
     "test_hostile_runsc::test_the_shared_memory_liar_gets_no_area_under_runsc"),
    ("T12 game the benchmark", ["id_keyed", "lookup"], "random ids, seeded order, repeat probes (scoring/fair.py): "
     "test_hostile_fair::test_a_model_keyed_on_ids_cannot_find_its_stored_answers, test_a_lookup_of_seen_pixels_is_caught_by_the_repeat_probe; "
     "test_hostile_runsc::test_the_gaming_attackers_are_caught_under_runsc"),
    ("T13 CPU theft", ["spin"], "test_hostile_host::test_a_model_gets_a_share_of_the_cpus_not_all_of_them"),
    ("T14 deserialisation", ["flood_progress"], "protobuf only, no pickle on model data; malformed frames and floods: "
     "test_hostile_wire::test_a_flood_of_empty_messages_is_a_protocol_violation, "
     "tests/sdk/test_protocol.py::test_malformed_responses_are_rejected_not_crashed_on"),
    ("T15 account abuse / identity", [], "test_hostile_wire::test_a_name_belongs_to_the_owner_who_registered_it_first "
     "(no quotas or sybil detection yet)"),
]

FINDINGS = [  # issue 11's red-team findings: (finding, modes of the zoo, tests)
    ("1 run served by another server (socket swap)", ["swap_socket"], "test_hostile_wire::test_a_socket_swapped_after_the_handshake_cannot_redirect_the_run; "
     "test_hostile_runsc::test_a_swapped_socket_cannot_redirect_the_run_under_runsc; test_hostile_host::test_a_model_that_ends_the_run_early_is_a_protocol_violation"),
    ("2 builds read the host", [], "test_hostile_host::test_asset_sources_are_confined_to_the_project_and_weight_folders, "
     "test_a_project_folder_must_not_hold_the_data, test_a_build_has_no_network_and_bounded_memory"),
    ("3 host memory (float64, over-cap outputs)", ["float64_wide", "over_budget"], "test_hostile_wire::test_float64_outputs_are_converted_while_streaming, "
     "test_an_over_budget_output_shape_is_a_classified_failure"),
    ("4 host disk (run folder total, 3,000-deep chain)", ["fill_run_folder", "deep_run_folder", "fill_run_folder/watch", "deep_run_folder/watch"],
     "test_hostile_host::test_the_run_folder_has_a_total, test_the_run_folder_has_a_total_without_root, "
     "test_the_watch_bounds_files_and_depth_and_never_follows_links, "
     "test_cleanup_survives_a_deep_chain_and_never_follows_links, test_removal_goes_to_any_depth_without_following_links, "
     "test_gc_removes_the_run_folders_of_dead_processes; test_hostile_runsc (tmpfs full under runsc)"),
    ("5 terminal escapes, markup in ids and errors", ["evil_id", "evil_text", "flood_log"], "test_hostile_wire::test_a_model_id_with_a_terminal_escape_is_refused, "
     "test_free_text_from_a_model_is_cut_and_cleaned; test_terminal.py; test_web_untrusted.py"),
    ("6 misclassified / unbounded (over-cap shape, log tail, description, claimed model_id)", ["over_budget", "flood_log", "evil_text"],
     "test_hostile_wire::test_an_over_budget_output_shape_is_a_classified_failure, test_a_name_belongs_to_the_owner_who_registered_it_first; "
     "test_hostile_host::test_the_log_tail_is_bounded_in_bytes_and_lines; test_hostile_concurrent (a constant RDM: bad_output)"),
    ("7 slow and loud (fork bomb load, empty-progress flood, trickle, CPU)", ["fork_bomb", "flood_progress", "slow", "hang", "spin"],
     "test_hostile_host::test_a_fork_bomb_stops_at_a_pids_limit_sized_for_the_host, test_a_model_gets_a_share_of_the_cpus_not_all_of_them; "
     "test_hostile_wire::test_a_flood_of_empty_messages_is_a_protocol_violation, test_a_silent_model_is_stopped_by_the_watchdog, "
     "test_a_model_too_slow_for_its_deadline_is_stopped_early; test_hostile_concurrent"),
]


def report(paths: list[Path]) -> str:
    runs = [json.loads(p.read_text()) for p in paths]
    runtimes = [r["runtime"] for r in runs]
    head = ["mode", *[f"{rt}: class" for rt in runtimes], *[f"{rt}: s" for rt in runtimes],
            *[f"{rt}: peak RSS MiB / load" for rt in runtimes], "left (containers/folders)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode in MODES:
        recs = [r["modes"].get(mode, {}) for r in runs]
        left = ", ".join(f"{r.get('containers_left', '?')}/{r.get('folders_left', '?') + r.get('mounts_left', 0) if r else '?'}"
                         for r in recs)
        lines.append("| " + " | ".join([
            f"`{mode}`",
            *[(r.get("class", "not run") + (f" {r['facts']}" if r.get("facts") and mode in FACT_MODES else "")) for r in recs],
            *[str(r.get("seconds", "")) for r in recs],
            *[f"{r.get('peak_rss_mib', '')} / {r.get('host_load_peak', '')}" for r in recs],
            left]) + " |")
    threats = ["| threat | zoo modes | tests |", "|---|---|---|"]
    threats += [f"| {t} | {', '.join(f'`{m}`' for m in modes) or '-'} | {tests} |" for t, modes, tests in THREATS]
    findings = ["| issue 11 finding | zoo modes | tests |", "|---|---|---|"]
    findings += [f"| {t} | {', '.join(f'`{m}`' for m in modes) or '-'} | {tests} |" for t, modes, tests in FINDINGS]
    return ("\n".join(threats) + "\n\n" + "\n".join(findings) + "\n\n## Every mode, under " + " and ".join(runtimes)
            + "\n\n" + "\n".join(lines) + "\n")


FACT_MODES = {"probe", "fill_run_folder", "deep_run_folder", "fork_bomb", "spin", "fill_run_folder/watch", "deep_run_folder/watch"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtime", default="runc")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--save", type=Path)
    p.add_argument("--one")
    p.add_argument("--image")
    p.add_argument("--report", nargs="+", type=Path)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.image, args.runtime)))
        return
    if args.report:
        print(report(args.report))
        return
    from cortexbox.orchestrator.runtime import docker_client

    docker = docker_client()
    results = {"runtime": args.runtime, "docker_host": os.environ.get("DOCKER_HOST", "default"),
               "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "modes": {}}
    if args.save and args.save.exists():  # a rerun of some modes updates their rows
        results["modes"] = json.loads(args.save.read_text())["modes"]
    run_root, built = Path(tempfile.mkdtemp(prefix="cbx-zoo-", dir="/tmp")), []
    try:
        for mode in args.modes.split(","):
            built.append(build(docker, mode))
            results["modes"][mode] = rec = measure(mode, built[-1], args.runtime, run_root)
            print(mode, json.dumps(rec), flush=True)
            if args.save:
                args.save.write_text(json.dumps(results, indent=1) + "\n")
    finally:
        shutil.rmtree(run_root, ignore_errors=True)
        stages = [f"cortexbox-stage/cortexbox-zoo--hostile--build:{tag.rpartition(':')[2]}" for tag in built]
        for tag in dict.fromkeys(built + stages):  # the images and their build stages' tags (images.keep_stages)
            try:
                docker.images.remove(tag, force=True)
            except Exception as e:  # noqa: BLE001 - already gone
                print(f"could not remove {tag}: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
