#!/usr/bin/env bash
# Starts the whole service on this machine: installs nats-server if it is missing, builds imsd,
# and runs every role with its own nats-server on loopback. Extra arguments go to `imsd run`
# (for example --regions eu-west-0,us-east-1 or --data-dir /var/lib/ims).
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_SERVER_BIN="$(deploy/install-nats-server.sh)"
export NATS_SERVER_BIN
cargo build --release -q -p ims-cli
exec target/release/imsd run "$@"
