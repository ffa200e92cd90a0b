#!/usr/bin/env bash
# selftest.sh - checks the contract tooling and the contract itself:
#   1. lint.mjs passes proto/openapi.yaml;
#   2. lint.mjs refuses fixtures/broken-openapi.yaml and reports each planted fault;
#   3. validate.mjs --require-coverage passes fixtures/sample.jsonl (good exchanges, one 2xx at
#      least for every operation);
#   4. validate.mjs fails every line of fixtures/bad.jsonl and exits 1;
#   5. validate.mjs --require-coverage fails on exchanges that leave operations uncovered;
#   6. validate.mjs exits 2 on a usage error.
# Installs the pinned npm packages (npm ci) when node_modules is missing or older than the lock.
# Closes with "selftest: N passed, N failed"; exit status 0 only when every check passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
spec=$(cd "$here/../.." && pwd)/proto/openapi.yaml
cd "$here"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "selftest: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "selftest: installing the pinned packages (npm ci)"
  npm ci --no-audit --no-fund
fi

passed=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ok() {
  passed=$((passed + 1))
  echo "ok   - $1"
}
not_ok() {
  failed=$((failed + 1))
  echo "FAIL - $1"
  sed 's/^/     | /' "$tmp/out"
}

# Runs a command with its output in $tmp/out; sets $rc.
run() {
  set +e
  "$@" >"$tmp/out" 2>&1
  rc=$?
  set -e
}

# 1. The contract lints clean.
run node lint.mjs "$spec"
if [ "$rc" -eq 0 ]; then ok "lint: $(tail -n 1 "$tmp/out" | sed 's/^lint: //')"; else not_ok "lint of proto/openapi.yaml (exit $rc)"; fi

# 2. The linter catches planted faults.
run node lint.mjs fixtures/broken-openapi.yaml
if [ "$rc" -ne 1 ]; then
  not_ok "lint of fixtures/broken-openapi.yaml should exit 1, exited $rc"
else
  missing=""
  for want in \
    'no operationId' \
    'tag undeclared is not declared' \
    'path parameter {thing} is not declared' \
    '$ref #/components/headers/X-Trace does not resolve' \
    'example does not match' \
    'must have exactly application/problem+json content' \
    'must declare a 401 problem response' \
    'must declare a 431 problem response' \
    'x-unmatched-responses: missing'; do
    grep -qF -- "$want" "$tmp/out" || missing="$missing [$want]"
  done
  if [ -z "$missing" ]; then ok "lint refuses fixtures/broken-openapi.yaml, naming every planted fault"; else not_ok "lint of fixtures/broken-openapi.yaml did not report:$missing"; fi
fi

# 3. Good exchanges pass, and cover every operation.
run node validate.mjs --require-coverage "$spec" fixtures/sample.jsonl
if [ "$rc" -eq 0 ]; then ok "validate fixtures/sample.jsonl --require-coverage: $(tail -n 1 "$tmp/out")"; else not_ok "validate fixtures/sample.jsonl should pass (exit $rc)"; fi

# 4. Every bad exchange fails.
run node validate.mjs "$spec" fixtures/bad.jsonl
n_bad=$(grep -c . fixtures/bad.jsonl)
if [ "$rc" -eq 1 ] && grep -qx "0 passed, $n_bad failed" "$tmp/out"; then
  ok "validate fixtures/bad.jsonl: all $n_bad bad exchanges fail, exit 1"
else
  not_ok "validate fixtures/bad.jsonl should fail all $n_bad lines and exit 1 (exit $rc)"
fi

# 5. Coverage is enforced.
head -n 3 fixtures/sample.jsonl >"$tmp/partial.jsonl"
run node validate.mjs --require-coverage "$spec" "$tmp/partial.jsonl"
if [ "$rc" -eq 1 ] && grep -q "FAIL coverage: no 2xx exchange for POST /v1/tables/{table}/search (searchTable)" "$tmp/out"; then
  ok "validate --require-coverage fails on uncovered operations and lists them"
else
  not_ok "validate --require-coverage on a partial file should exit 1 listing searchTable (exit $rc)"
fi

# 6. Usage errors.
run node validate.mjs "$spec"
if [ "$rc" -eq 2 ]; then ok "validate with one argument exits 2"; else not_ok "validate with one argument should exit 2, exited $rc"; fi

echo "selftest: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
