#!/usr/bin/env bash
# Starts a replicated ims deployment on this machine (DESIGN.md section 12), on loopback:
#   - three nats-servers in a JetStream cluster, each with the auth callout (ports 4222-4224,
#     cluster ports 6222-6224);
#   - the identity role (the auth callout, credentials);
#   - two imsd nodes of every region: `a` leads (HTTP on 8080), `b` is its standby (8081).
# Kill a's process (or a nats-server) and watch b take over: `imsctl` keeps working.
#
# Environment: IMS_CLUSTER_DIR (default ./data-cluster), IMS_REGIONS (default local-1),
# IMS_CLUSTER_PORT (first client port, default 4222; cluster ports are 2000 above, HTTP ports
# IMS_HTTP_PORT and up, default 8080), IMSD (an imsd binary; default: build the release one).
# The operator's token is written to $IMS_CLUSTER_DIR/identity/operator.token, and the servers'
# URLs to $IMS_CLUSTER_DIR/nats.url. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
NATS_SERVER_BIN="$(deploy/install-nats-server.sh)"
if [ -z "${IMSD:-}" ]; then
  cargo build --release -q -p ims-cli
  IMSD=target/release/imsd
fi
DIR="${IMS_CLUSTER_DIR:-./data-cluster}"
REGIONS="${IMS_REGIONS:-local-1}"
PORT="${IMS_CLUSTER_PORT:-4222}"
HTTP_PORT="${IMS_HTTP_PORT:-8080}"
mkdir -p "$DIR/identity"
DIR="$(cd "$DIR" && pwd)"

trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT
trap 'exit 0' INT TERM

urls=()
for i in 0 1 2; do
  urls+=("nats://127.0.0.1:$((PORT + i))")
done
URLS="$(IFS=,; echo "${urls[*]}")"

for i in 0 1 2; do
  routes=()
  for j in 0 1 2; do
    [ "$j" = "$i" ] || routes+=("nats-route://127.0.0.1:$((PORT + 2000 + j))")
  done
  "$IMSD" nats-config --data-dir "$DIR/identity" --listen "127.0.0.1:$((PORT + i))" \
    --server-name "n$i" --jetstream-dir "$DIR/nats-$i/jetstream" \
    --cluster-name ims --cluster-listen "127.0.0.1:$((PORT + 2000 + i))" \
    --routes "$(IFS=,; echo "${routes[*]}")" > "$DIR/nats-$i.conf"
  "$NATS_SERVER_BIN" -c "$DIR/nats-$i.conf" > "$DIR/nats-$i.log" 2>&1 &
done
echo "$URLS" > "$DIR/nats.url"

"$IMSD" identity --nats-url "$URLS" --data-dir "$DIR/identity" 2> "$DIR/identity.log" &

for node in a b; do
  # Every imsd of a deployment connects with the same service keys.
  mkdir -p "$DIR/$node/nats"
  chmod 700 "$DIR/$node/nats"
  cp -p "$DIR/identity/nats/"*.nk "$DIR/$node/nats/"
done
"$IMSD" run --no-identity --replication jetstream --replicas 3 --node-id a \
  --nats-url "$URLS" --data-dir "$DIR/a" --regions "$REGIONS" \
  --http-addr "127.0.0.1:$HTTP_PORT" 2> "$DIR/a.log" &
"$IMSD" run --no-identity --replication jetstream --replicas 3 --node-id b --standby \
  --nats-url "$URLS" --data-dir "$DIR/b" --regions "$REGIONS" \
  --http-addr "127.0.0.1:$((HTTP_PORT + 1))" 2> "$DIR/b.log" &

echo "ims cluster starting in $DIR: NATS $URLS; node a (leader) http://127.0.0.1:$HTTP_PORT, node b (standby) http://127.0.0.1:$((HTTP_PORT + 1))"
echo "try: imsctl --nats-url $URLS --token-file $DIR/identity/operator.token --region ${REGIONS%%,*} op register-tenant acme"
wait
