#!/usr/bin/env node
// validate.mjs - checks recorded HTTP exchanges against the OpenAPI contract of `embd serve`.
//
// usage: node validate.mjs [--require-coverage] SPEC EXCHANGES.jsonl
//
// EXCHANGES is JSON Lines, one object per HTTP exchange (blank lines are skipped):
//   {"method": "GET", "path": "/v1/tables/demo/rows/3?encoding=json", "status": 200,
//    "content_type": "application/json", "body": "<the response body as a string>"}
// and optionally "headers": {"X-Request-Id": "...", ...} (response headers; names in any case)
// and "note": "<free text shown in failure lines>".
//
// For each exchange: the path (without query) is matched to a path template, the operation
// found by method, the response by status (exact, then 4XX-style ranges, then "default"). A
// request that matches no operation (unknown path or method) is checked against the document's
// x-unmatched-responses. The Content-Type must be one the response declares (compared without
// parameters); JSON bodies (application/json, *+json) must parse and validate against the
// schema (ajv, JSON Schema 2020-12, all errors, formats), and a problem body's "status" must
// equal the HTTP status. When "headers" is given, every header the response declares as
// required must be present and match its schema.
//
// --require-coverage: also fail when an operation of the document has no 2xx exchange (lists
// them; each counts as one failure).
//
// Prints one line per failure and closes with "N passed, N failed".
// Exit status: 0 all passed, 1 a failure, 2 usage error or unreadable spec or exchanges file.
import { readFileSync } from "node:fs";
import {
  HTTP_METHODS,
  compileAt,
  deref,
  formatAjvErrors,
  isJsonMediaType,
  loadSpec,
  makeAjv,
  matchPath,
  mediaTypeBase,
  pathMatchers,
  pointer,
} from "./spec.mjs";

const USAGE = "usage: node validate.mjs [--require-coverage] SPEC EXCHANGES.jsonl";
const argv = process.argv.slice(2);
const requireCoverage = argv.includes("--require-coverage");
const files = argv.filter((a) => a !== "--require-coverage");
if (argv.includes("-h") || argv.includes("--help")) {
  console.log(USAGE);
  process.exit(0);
}
if (files.length !== 2 || files.some((f) => f.startsWith("-"))) {
  console.error(USAGE);
  process.exit(2);
}
const [specFile, exchangesFile] = files;

let spec;
let lines;
try {
  spec = loadSpec(specFile);
  lines = readFileSync(exchangesFile, "utf8").split(/\r?\n/);
} catch (e) {
  console.error(`validate: ${e.message}`);
  process.exit(2);
}

const ajv = makeAjv(spec);
const matchers = pathMatchers(spec);
const validators = new Map();
function validatorAt(ref) {
  if (!validators.has(ref)) validators.set(ref, compileAt(ajv, ref));
  return validators.get(ref);
}

// The response object (and the pointer of its content) for a status, or null.
function findResponse(responses, baseTokens, status) {
  const code = String(status);
  const range = `${code[0]}XX`;
  for (const key of [code, range, range.toLowerCase(), "default"]) {
    if (responses && Object.hasOwn(responses, key)) {
      const { node, ref } = deref(spec, responses[key], pointer([...baseTokens, key]));
      return { key, response: node, ref };
    }
  }
  return null;
}

// Checks one exchange; returns a list of reasons it fails (empty when it passes) and, when it
// matched an operation, the operation's key for coverage.
function check(ex) {
  const reasons = [];
  const method = String(ex.method).toLowerCase();
  const m = matchPath(matchers, ex.path);
  let responses = null;
  let baseTokens = null;
  let opKey = null;
  if (m && HTTP_METHODS.includes(method) && spec.paths[m.template][method]) {
    opKey = `${method.toUpperCase()} ${m.template}`;
    responses = spec.paths[m.template][method].responses;
    baseTokens = ["paths", m.template, method, "responses"];
  } else {
    // Unknown path, or a method the path does not have: the fallback answers.
    responses = spec["x-unmatched-responses"];
    baseTokens = ["x-unmatched-responses"];
    if (!responses) {
      reasons.push(m ? `no ${ex.method} operation on ${m.template}` : "no path template matches");
      return { reasons, opKey };
    }
  }
  const where =
    opKey ?? (m ? `${ex.method} ${m.template} (no such operation)` : "(no path template matches)");
  const found = findResponse(responses, baseTokens, ex.status);
  if (!found) {
    const declared = Object.keys(responses).join(", ");
    reasons.push(`${where}: status ${ex.status} is not declared (declared: ${declared})`);
    return { reasons, opKey };
  }
  const { response, ref } = found;
  const content = response.content ?? {};
  const declaredTypes = Object.keys(content);

  // Headers, when the exchange recorded them.
  if (ex.headers && typeof ex.headers === "object") {
    const got = Object.fromEntries(Object.entries(ex.headers).map(([k, v]) => [k.toLowerCase(), v]));
    for (const [name, h] of Object.entries(response.headers ?? {})) {
      const hdr = deref(spec, h).node;
      const value = got[name.toLowerCase()];
      if (value === undefined) {
        if (hdr.required) reasons.push(`header ${name} is missing`);
        continue;
      }
      if (hdr.schema) {
        const schemaRef = pointer([...refTokens(ref, h, name), "schema"]);
        const v = validatorAt(schemaRef);
        const typed = hdr.schema.type === "integer" || hdr.schema.type === "number" ? Number(value) : value;
        if (!v(typed))
          reasons.push(
            `header ${name}: ${JSON.stringify(value)} ${formatAjvErrors(v.errors).replace(/^\(body\) /, "")}`,
          );
      }
    }
  }

  // Content type.
  const ct = ex.content_type ?? "";
  const base = mediaTypeBase(ct);
  if (declaredTypes.length === 0) {
    if (ex.body) reasons.push(`a body of ${ex.body.length} bytes where the response declares none`);
    return { reasons, opKey };
  }
  const mtKey = declaredTypes.find((t) => mediaTypeBase(t) === base);
  if (!mtKey) {
    reasons.push(
      `content type ${JSON.stringify(ct)} is not declared (declared: ${declaredTypes.join(", ")})`,
    );
    return { reasons, opKey };
  }

  // Body.
  if (isJsonMediaType(base) && content[mtKey].schema) {
    let body;
    try {
      body = JSON.parse(ex.body);
    } catch (e) {
      reasons.push(`body is not JSON (${e.message}): ${JSON.stringify(String(ex.body).slice(0, 80))}`);
      return { reasons, opKey };
    }
    const v = validatorAt(pointer([...tokensOf(ref), "content", mtKey, "schema"]));
    if (!v(body)) reasons.push(formatAjvErrors(v.errors));
    if (
      base === "application/problem+json" &&
      body &&
      typeof body === "object" &&
      body.status !== ex.status
    ) {
      reasons.push(`problem "status" ${JSON.stringify(body.status)} is not the HTTP status ${ex.status}`);
    }
  }
  return { reasons, opKey };
}

// Pointer tokens from a "#/a/b" pointer.
function tokensOf(ref) {
  return ref
    .slice(2)
    .split("/")
    .map((t) => decodeURIComponent(t).replace(/~1/g, "/").replace(/~0/g, "~"));
}

// Tokens of a header object: the component it references, or its place in the response.
function refTokens(responseRef, headerObj, name) {
  if (headerObj && typeof headerObj.$ref === "string") {
    const { ref } = deref(spec, headerObj, headerObj.$ref);
    return tokensOf(ref);
  }
  return [...tokensOf(responseRef), "headers", name];
}

let passed = 0;
let failed = 0;
const covered = new Set();
lines.forEach((line, i) => {
  if (line.trim() === "") return;
  const n = i + 1;
  let ex;
  try {
    ex = JSON.parse(line);
  } catch (e) {
    failed++;
    console.log(`FAIL line ${n}: not JSON: ${e.message}`);
    return;
  }
  const bad = [];
  if (!ex || typeof ex !== "object" || Array.isArray(ex)) bad.push("not an object");
  else {
    if (typeof ex.method !== "string" || !/^[A-Za-z]+$/.test(ex.method))
      bad.push('method must be a string like "GET"');
    if (typeof ex.path !== "string" || !ex.path.startsWith("/"))
      bad.push("path must be a string starting with /");
    if (!Number.isInteger(ex.status) || ex.status < 100 || ex.status > 599)
      bad.push("status must be an integer 100..599");
    if (ex.content_type !== undefined && ex.content_type !== null && typeof ex.content_type !== "string")
      bad.push("content_type must be a string or null");
    if (typeof ex.body !== "string") bad.push("body must be a string");
  }
  if (bad.length > 0) {
    failed++;
    console.log(`FAIL line ${n}: malformed exchange: ${bad.join("; ")}`);
    return;
  }
  let result;
  try {
    result = check(ex);
  } catch (e) {
    result = { reasons: [`cannot check: ${e.message}`], opKey: null };
  }
  const label = `${ex.method} ${ex.path} ${ex.status}${ex.note ? ` (${ex.note})` : ""}`;
  if (result.opKey && ex.status >= 200 && ex.status < 300) covered.add(result.opKey);
  if (result.reasons.length === 0) {
    passed++;
  } else {
    failed++;
    console.log(`FAIL line ${n}: ${label}: ${result.reasons.join("; ")}`);
  }
});

if (requireCoverage) {
  const missing = [];
  for (const [template, item] of Object.entries(spec.paths ?? {})) {
    for (const method of HTTP_METHODS) {
      const op = item[method];
      if (op && !covered.has(`${method.toUpperCase()} ${template}`)) {
        missing.push(`${method.toUpperCase()} ${template}${op.operationId ? ` (${op.operationId})` : ""}`);
      }
    }
  }
  for (const op of missing) console.log(`FAIL coverage: no 2xx exchange for ${op}`);
  if (missing.length > 0) {
    console.log(`coverage: ${missing.length} operation(s) without a 2xx exchange`);
    failed += missing.length;
  } else {
    console.log("coverage: every operation has a 2xx exchange");
  }
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
