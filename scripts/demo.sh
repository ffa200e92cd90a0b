#!/usr/bin/env bash
# The README's first command: install, build, and run embd on a built-in demo table.
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
echo
echo "Try: $embd search demo/demo.emb --key violin    (or --id 3, or --vector \"...\")"
