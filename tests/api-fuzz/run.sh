#!/usr/bin/env bash
# make api-fuzz: schemathesis (pinned, from PyPI, in a venv under target/)
# against a real fedid-server's /openapi.json, with a valid token, positive
# and negative data, every check. Bounded by EXAMPLES per operation.
set -euo pipefail
cd "$(dirname "$0")/../.."
EXAMPLES="${EXAMPLES:-25}"
VENV=target/api-fuzz-venv
if [ ! -x "$VENV/bin/schemathesis" ] || [ ! -x "$VENV/bin/openapi-spec-validator" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q schemathesis==4.32.5 openapi-spec-validator==0.7.2
fi
cargo build -q -p fedid-server
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export FEDID__DATABASE__URL="sqlite://$WORK/api-fuzz.db" FEDID__SERVER__BIND="127.0.0.1:$PORT" \
  FEDID__FEDERATION__DOMAIN="127.0.0.1:$PORT" FEDID__FEDERATION__SCHEME=http \
  FEDID__FEDERATION__ALLOW_PRIVATE_NETWORKS=true FEDID__LOG__LEVEL=error
./target/debug/fedid-server migrate > /dev/null
TOKEN=$(./target/debug/fedid-server user create | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
./target/debug/fedid-server serve 2> "$WORK/server.log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break
  sleep 0.1
done
# The document itself first, against the OpenAPI 3.1 specification
# (unique operationIds, valid schemas and references).
curl -sf "http://127.0.0.1:$PORT/openapi.json" > "$WORK/openapi.json"
"$VENV/bin/openapi-spec-validator" "$WORK/openapi.json"
# From the work folder: schemathesis keeps a cache in its current directory.
ROOT=$PWD
(cd "$WORK" && "$ROOT/$VENV/bin/schemathesis" --config-file "$ROOT/tests/api-fuzz/schemathesis.toml" run \
  "http://127.0.0.1:$PORT/openapi.json" -H "Authorization: Bearer $TOKEN" \
  --mode all --checks all --max-examples "$EXAMPLES" --generation-deterministic)
if grep -q panicked "$WORK/server.log"; then
  echo "api-fuzz: the server panicked"; exit 1
fi
