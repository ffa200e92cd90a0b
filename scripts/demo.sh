#!/usr/bin/env bash
# The README's first command: install, build, pack a built-in demo table, show it, and serve
# it on 127.0.0.1:8080 (EMBD_LISTEN overrides) until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh >/dev/null
embd=build/embd
mkdir -p demo
echo "== generating a demo table: ~300 words in topics (fruits, colours, planets, ...)"
$embd gen --kind demo -o demo/demo.txt
echo "== embd pack demo/demo.txt -o demo/demo.emb --dtype f16+q1"
$embd pack demo/demo.txt -o demo/demo.emb --dtype f16+q1
echo
echo "== embd info demo/demo.emb"
$embd info demo/demo.emb
echo
echo "== embd verify demo/demo.emb"
$embd verify demo/demo.emb
for key in apple python mercury; do
  echo
  echo "== embd search demo/demo.emb --key $key -k 8"
  $embd search demo/demo.emb --key "$key" -k 8
done
cat <<EOF

== embd serve demo/demo.emb on http://127.0.0.1:8080 (Ctrl-C drains and stops it)
Try, from another terminal:
  curl -s localhost:8080/v1/tables/demo
  curl -s localhost:8080/v1/tables/demo/keys/apple
  curl -s localhost:8080/v1/tables/demo/search -H 'Content-Type: application/json' -d '{"key": "apple", "k": 5}'
  curl -s localhost:8080/v1/tables/demo/gather -H 'Content-Type: application/json' -d '{"keys": ["apple", "pear"], "pool": "mean"}'
  curl -s localhost:8080/metrics | grep embd_http_requests_total
EOF
exec $embd serve --listen "${EMBD_LISTEN:-127.0.0.1:8080}" --log-format text --shutdown-delay 0 demo/demo.emb
