#!/usr/bin/env bash
# Finds or installs moto_server (PyPI moto[server], a local S3) for the image store's S3
# conformance tests, and prints its path. Uses MOTO_SERVER_BIN or a moto_server on PATH when
# there is one; otherwise installs into a venv inside the project, .venv-moto/.
set -euo pipefail
cd "$(dirname "$0")/.."

for candidate in "${MOTO_SERVER_BIN:-}" "$(command -v moto_server 2>/dev/null || true)" \
  "$PWD/.venv-moto/bin/moto_server"; do
  # A pyenv shim is on PATH whether or not moto is installed behind it: try it.
  if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" --help >/dev/null 2>&1; then
    echo "$candidate"
    exit 0
  fi
done

echo "installing moto_server with pip (PyPI package moto[server]) into .venv-moto/" >&2
if ! python3 -m venv .venv-moto >&2 2>/dev/null; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv) >&2
  fi
  python3 -m venv .venv-moto >&2
fi
.venv-moto/bin/pip install -q --disable-pip-version-check 'moto[server]' >&2
echo "$PWD/.venv-moto/bin/moto_server"
