#!/usr/bin/env node
// lint.mjs - lints the OpenAPI 3.1 contract of `embd serve`.
//
// usage: node lint.mjs [SPEC]     (default: ../../proto/openapi.yaml beside this file)
//
// Checks, in order (every failure is reported, then the exit status is 1):
//   1. the file is YAML without duplicate keys, and `openapi` is 3.1.x;
//   2. the document matches the official OpenAPI 3.1 JSON schema
//      (@seriousme/openapi-schema-validator);
//   3. every $ref is local ("#/...") and resolves; unused components are warned about;
//   4. every schema compiles under JSON Schema 2020-12 (ajv), and every example - of media
//      types, parameters, headers, and `examples` of schemas - validates against its schema;
//   5. operations: a unique camelCase operationId, a summary, declared tags, a 2xx response;
//      every path template parameter declared as a required path parameter and vice versa;
//      every response declares the X-Request-Id header; 2xx responses of /v1/tables/{table}...
//      declare ETag; 401 declares WWW-Authenticate, 405 Allow, 503 Retry-After;
//   6. every 4xx/5xx response is application/problem+json only, with a schema built on
//      #/components/schemas/Problem (which must have type, title, status, detail required and
//      instance, request_id optional), and each operation declares the problem statuses it can
//      return: always 400, 431, 500; /v1 operations also 401 and 503 and name bearerAuth in
//      their security (others `security: []`); operations with path parameters 404; with query
//      parameters, non-table path parameters or a request body 422; with a request body 413
//      and 415 (and only application/json request content);
//   7. x-unmatched-responses (answers to requests that match no operation) has 404 and 405
//      problem responses.
// Exit status: 0 clean (warnings allowed), 1 lint errors (invalid YAML included), 2 usage or an
// unreadable file.
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Validator } from "@seriousme/openapi-schema-validator";
import {
  HTTP_METHODS,
  compileAt,
  deref,
  formatAjvErrors,
  loadSpec,
  makeAjv,
  mediaTypeBase,
  pointer,
  resolvePointer,
} from "./spec.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
if (args.includes("-h") || args.includes("--help") || args.length > 1) {
  console.error("usage: node lint.mjs [SPEC]   (default: proto/openapi.yaml of this repository)");
  process.exit(args.length > 1 ? 2 : 0);
}
const specFile = resolve(args[0] ?? resolve(here, "../../proto/openapi.yaml"));

const errors = [];
const warnings = [];
const error = (where, msg) => errors.push(`${where}: ${msg}`);
const warn = (where, msg) => warnings.push(`${where}: ${msg}`);

function finish(stats) {
  for (const w of warnings) console.log(`lint: warning: ${w}`);
  for (const e of errors) console.log(`lint: ERROR: ${e}`);
  if (errors.length > 0) {
    console.log(`lint: ${specFile}: ${errors.length} error(s), ${warnings.length} warning(s)`);
    process.exit(1);
  }
  console.log(`lint: ${specFile}: ok (${stats}; ${warnings.length} warning(s))`);
  process.exit(0);
}

// ---- 1. YAML and version ------------------------------------------------------------------
let spec;
try {
  spec = loadSpec(specFile);
} catch (e) {
  console.log(`lint: ERROR: ${e.message}`);
  process.exit(e.unreadable ? 2 : 1);
}
if (typeof spec.openapi !== "string" || !/^3\.1\.\d+$/.test(spec.openapi)) {
  error("openapi", `expected a 3.1.x version, got ${JSON.stringify(spec.openapi)}`);
  finish("not checked further");
}

// ---- 2. the official OpenAPI 3.1 schema ---------------------------------------------------
{
  const validator = new Validator();
  const res = await validator.validate(structuredClone(spec));
  if (!res.valid) {
    const list = Array.isArray(res.errors) ? res.errors : [res.errors];
    for (const e of list.slice(0, 30)) {
      if (typeof e === "string") error("structure", e);
      else
        error(
          `structure ${e.instancePath || "/"}`,
          `${e.message}${e.params ? " " + JSON.stringify(e.params) : ""}`,
        );
    }
    if (list.length > 30) error("structure", `... and ${list.length - 30} more`);
  }
}

// ---- 3. references ---------------------------------------------------------------------------
// Example payloads are data, not document structure: a "$ref" key inside one is a value. They
// are `example` anywhere, `value` of an Example object, and a schema's `examples` array.
function isData(node, key, tokens) {
  if (key === "example") return true;
  if (key === "value" && tokens[tokens.length - 2] === "examples") return true;
  return key === "examples" && Array.isArray(node[key]);
}
const usedRefs = new Set();
(function walk(node, tokens) {
  if (Array.isArray(node)) {
    node.forEach((v, i) => walk(v, [...tokens, i]));
    return;
  }
  if (node === null || typeof node !== "object") return;
  if (Object.hasOwn(node, "$ref") && typeof node.$ref === "string") {
    const ref = node.$ref;
    if (!ref.startsWith("#/")) {
      error(pointer(tokens), `$ref ${ref} is not a local reference ("#/...")`);
    } else if (resolvePointer(spec, ref) === undefined) {
      error(pointer(tokens), `$ref ${ref} does not resolve`);
    } else {
      usedRefs.add(ref);
    }
  }
  for (const [k, v] of Object.entries(node)) {
    if (!isData(node, k, tokens)) walk(v, [...tokens, k]);
  }
})(spec, []);

// Components reached only through other components count as used: close over the ref graph.
{
  const reached = new Set();
  const queue = [...usedRefs].filter((r) => !r.startsWith("#/components/"));
  const collect = (node, out, tokens = []) => {
    if (Array.isArray(node)) node.forEach((v, i) => collect(v, out, [...tokens, i]));
    else if (node && typeof node === "object") {
      if (typeof node.$ref === "string") out.push(node.$ref);
      for (const [k, v] of Object.entries(node))
        if (!isData(node, k, tokens)) collect(v, out, [...tokens, k]);
    }
  };
  // Roots: everything outside components.
  const roots = [];
  for (const [k, v] of Object.entries(spec)) if (k !== "components") collect(v, roots);
  queue.push(...roots);
  while (queue.length > 0) {
    const ref = queue.pop();
    // A ref may point inside a component; mark the component itself.
    const m = /^#\/components\/([^/]+)\/([^/]+)/.exec(ref);
    const key = m ? `#/components/${m[1]}/${m[2]}` : ref;
    if (reached.has(key)) continue;
    reached.add(key);
    const target = resolvePointer(spec, key);
    if (target !== undefined) {
      const next = [];
      collect(target, next);
      queue.push(...next);
    }
  }
  for (const [kind, group] of Object.entries(spec.components ?? {})) {
    if (kind === "securitySchemes") continue; // used by name in `security`, not by $ref
    for (const name of Object.keys(group ?? {})) {
      const ref = `#/components/${kind}/${name}`;
      if (!reached.has(ref)) warn(ref, "defined but never used");
    }
  }
}

// ---- 4. schemas and examples ---------------------------------------------------------------
const ajv = makeAjv(spec);
const compiled = new Map();
// A broken schema breaks every schema that refers to it: report each compile error once, at the
// first place it shows, and count the others.
const compileErrors = new Map();
function validatorAt(ref, where) {
  if (compiled.has(ref)) return compiled.get(ref);
  let v = null;
  try {
    v = compileAt(ajv, ref);
  } catch (e) {
    if (compileErrors.has(e.message)) compileErrors.get(e.message).count++;
    else {
      compileErrors.set(e.message, { count: 0 });
      error(where, `schema does not compile: ${e.message}`);
    }
  }
  compiled.set(ref, v);
  return v;
}

let nSchemas = 0;
let nExamples = 0;
function checkExample(schemaRef, value, where) {
  const v = validatorAt(schemaRef, schemaRef);
  if (!v) return;
  nExamples++;
  if (!v(value)) error(where, `example does not match ${schemaRef}: ${formatAjvErrors(v.errors)}`);
}

// Every schema object under components.schemas: compile it and check its `examples`.
const SUBSCHEMA_MAPS = ["properties", "patternProperties", "$defs", "dependentSchemas"];
const SUBSCHEMA_LISTS = ["allOf", "anyOf", "oneOf", "prefixItems"];
const SUBSCHEMA_ONE = [
  "items",
  "additionalProperties",
  "not",
  "if",
  "then",
  "else",
  "contains",
  "propertyNames",
  "unevaluatedItems",
  "unevaluatedProperties",
];
function walkSchema(schema, tokens) {
  if (schema === null || typeof schema !== "object" || Array.isArray(schema)) return;
  const ref = pointer(tokens);
  nSchemas++;
  validatorAt(ref, ref);
  if (Object.hasOwn(schema, "examples")) {
    if (!Array.isArray(schema.examples))
      error(ref, "a schema's `examples` must be an array (JSON Schema 2020-12)");
    else schema.examples.forEach((ex, i) => checkExample(ref, ex, `${ref}/examples/${i}`));
  }
  if (Object.hasOwn(schema, "example")) {
    warn(ref, "`example` in a schema is deprecated in OpenAPI 3.1: use `examples: [...]`");
    checkExample(ref, schema.example, `${ref}/example`);
  }
  for (const k of SUBSCHEMA_MAPS) {
    if (schema[k] && typeof schema[k] === "object") {
      for (const [name, sub] of Object.entries(schema[k])) walkSchema(sub, [...tokens, k, name]);
    }
  }
  for (const k of SUBSCHEMA_LISTS) {
    if (Array.isArray(schema[k])) schema[k].forEach((sub, i) => walkSchema(sub, [...tokens, k, i]));
  }
  for (const k of SUBSCHEMA_ONE) {
    if (schema[k] && typeof schema[k] === "object") walkSchema(schema[k], [...tokens, k]);
  }
}
for (const name of Object.keys(spec.components?.schemas ?? {})) {
  walkSchema(spec.components.schemas[name], ["components", "schemas", name]);
}

// Examples of a media type object, parameter or header (schema at tokens + "schema").
function checkExamplesOf(obj, tokens) {
  if (!obj || typeof obj !== "object" || !obj.schema) return;
  const schemaRef = pointer([...tokens, "schema"]);
  if (Object.hasOwn(obj, "example")) checkExample(schemaRef, obj.example, pointer([...tokens, "example"]));
  for (const [name, ex] of Object.entries(obj.examples ?? {})) {
    let exObj;
    try {
      exObj = deref(spec, ex).node;
    } catch (e) {
      error(pointer([...tokens, "examples", name]), e.message);
      continue;
    }
    if (Object.hasOwn(exObj, "value")) {
      checkExample(schemaRef, exObj.value, pointer([...tokens, "examples", name, "value"]));
    }
  }
}
function checkContent(content, tokens) {
  for (const [mt, obj] of Object.entries(content ?? {})) {
    if (obj?.schema) validatorAt(pointer([...tokens, mt, "schema"]), pointer([...tokens, mt]));
    checkExamplesOf(obj, [...tokens, mt]);
  }
}
for (const [name, p] of Object.entries(spec.components?.parameters ?? {}))
  checkExamplesOf(p, ["components", "parameters", name]);
for (const [name, h] of Object.entries(spec.components?.headers ?? {}))
  checkExamplesOf(h, ["components", "headers", name]);
for (const [name, r] of Object.entries(spec.components?.responses ?? {}))
  checkContent(r?.content, ["components", "responses", name, "content"]);
for (const [name, b] of Object.entries(spec.components?.requestBodies ?? {}))
  checkContent(b?.content, ["components", "requestBodies", name, "content"]);

// ---- 6 (first part). the Problem schema ------------------------------------------------------
const PROBLEM_REF = "#/components/schemas/Problem";
const PROBLEM_MT = "application/problem+json";
{
  const problem = resolvePointer(spec, PROBLEM_REF);
  if (!problem) {
    error(PROBLEM_REF, "missing: every error response must use it");
  } else {
    const req = new Set(problem.required ?? []);
    for (const f of ["type", "title", "status", "detail"]) {
      if (!req.has(f)) error(PROBLEM_REF, `\`${f}\` must be required`);
      if (!problem.properties?.[f]) error(PROBLEM_REF, `property \`${f}\` missing`);
    }
    for (const f of ["instance", "request_id"]) {
      if (!problem.properties?.[f]) error(PROBLEM_REF, `optional property \`${f}\` missing`);
      if (req.has(f)) error(PROBLEM_REF, `\`${f}\` must be optional`);
    }
    if (problem.properties?.type?.format !== "uri-reference")
      error(PROBLEM_REF, "`type` must have format uri-reference");
    if (problem.properties?.status?.type !== "integer") error(PROBLEM_REF, "`status` must be an integer");
  }
}

// Whether a schema is built on Problem: the Problem ref itself, or allOf containing a schema
// that is (following $refs).
function isProblemSchema(schema, depth = 0) {
  if (!schema || typeof schema !== "object" || depth > 10) return false;
  if (schema.$ref === PROBLEM_REF) return true;
  if (typeof schema.$ref === "string") return isProblemSchema(resolvePointer(spec, schema.$ref), depth + 1);
  return Array.isArray(schema.allOf) && schema.allOf.some((s) => isProblemSchema(s, depth + 1));
}

// Checks one response (after $ref) of an operation or of x-unmatched-responses.
function checkResponse(code, resp, where, opts = {}) {
  let r;
  try {
    r = deref(spec, resp).node;
  } catch (e) {
    error(where, e.message);
    return null;
  }
  if (typeof r.description !== "string" || r.description.trim() === "")
    error(where, "response has no description");
  const headers = {};
  for (const [name, h] of Object.entries(r.headers ?? {})) {
    try {
      headers[name.toLowerCase()] = deref(spec, h).node;
    } catch (e) {
      error(`${where} header ${name}`, e.message);
    }
  }
  const needHeader = (name, why) => {
    const h = headers[name.toLowerCase()];
    if (!h) error(where, `must declare the ${name} header (${why})`);
    else if (h.required !== true && !opts.optionalHeaders?.includes(name))
      error(where, `header ${name} must be required: true`);
  };
  needHeader("X-Request-Id", "every response has one");
  if (opts.etag && /^2/.test(code)) needHeader("ETag", "a 2xx response about a table");
  if (code === "401") needHeader("WWW-Authenticate", "RFC 9110 section 11.6.1");
  if (code === "405") needHeader("Allow", "RFC 9110 section 15.5.6");
  if (code === "503") needHeader("Retry-After", "every 503 says when to retry");
  const isError = code === "default" || /^[45]/.test(code);
  const content = r.content ?? {};
  if (isError) {
    const types = Object.keys(content);
    if (types.length !== 1 || types[0] !== PROBLEM_MT) {
      error(where, `an error response must have exactly ${PROBLEM_MT} content, has ${JSON.stringify(types)}`);
    } else if (!isProblemSchema(content[PROBLEM_MT].schema)) {
      error(where, `the ${PROBLEM_MT} schema must be ${PROBLEM_REF} or allOf including it`);
    }
  } else if (/^2/.test(code) && code !== "204" && Object.keys(content).length === 0) {
    error(where, "a 2xx response must declare its content");
  }
  for (const [mt, obj] of Object.entries(content)) {
    if (!obj?.schema) error(`${where} ${mt}`, "media type has no schema");
  }
  return r;
}

// ---- 5 and 6. operations -------------------------------------------------------------------
const declaredTags = new Set((spec.tags ?? []).map((t) => t.name));
const securitySchemes = spec.components?.securitySchemes ?? {};
const bearer = securitySchemes.bearerAuth;
if (!bearer || bearer.type !== "http" || String(bearer.scheme).toLowerCase() !== "bearer") {
  error("#/components/securitySchemes/bearerAuth", "must exist with type: http and scheme: bearer");
}
const operationIds = new Map();
let nOps = 0;
for (const [template, item] of Object.entries(spec.paths ?? {})) {
  const templateParams = [...template.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
  const pathLevel = item.parameters ?? [];
  for (const method of HTTP_METHODS) {
    const op = item[method];
    if (!op) continue;
    nOps++;
    const where = `${method.toUpperCase()} ${template}`;
    // Identity and documentation.
    if (typeof op.operationId !== "string" || op.operationId === "") {
      error(where, "no operationId");
    } else {
      if (!/^[a-z][A-Za-z0-9]*$/.test(op.operationId))
        error(where, `operationId ${op.operationId} is not camelCase`);
      if (operationIds.has(op.operationId))
        error(where, `operationId ${op.operationId} also used by ${operationIds.get(op.operationId)}`);
      operationIds.set(op.operationId, where);
    }
    if (typeof op.summary !== "string" || op.summary.trim() === "") error(where, "no summary");
    if (!Array.isArray(op.tags) || op.tags.length === 0) error(where, "no tags");
    for (const t of op.tags ?? [])
      if (!declaredTags.has(t)) error(where, `tag ${t} is not declared in the top-level tags`);

    // Parameters: resolve, no duplicates, path parameters match the template.
    const params = new Map();
    for (const [level, list] of [
      ["path item", pathLevel],
      ["operation", op.parameters ?? []],
    ]) {
      for (const p of list) {
        let pr;
        try {
          pr = deref(spec, p).node;
        } catch (e) {
          error(where, e.message);
          continue;
        }
        const key = `${pr.in}:${pr.name}`;
        if (level === "operation" && params.has(key) && params.get(key).level === "operation") {
          error(where, `parameter ${pr.name} (in ${pr.in}) declared twice`);
        }
        params.set(key, { ...pr, level });
      }
    }
    const pathParams = [...params.values()].filter((p) => p.in === "path");
    for (const name of templateParams) {
      const p = params.get(`path:${name}`);
      if (!p) error(where, `path parameter {${name}} is not declared`);
      else if (p.required !== true) error(where, `path parameter ${name} must be required: true`);
    }
    for (const p of pathParams) {
      if (!templateParams.includes(p.name)) error(where, `path parameter ${p.name} is not in the template`);
    }
    const queryParams = [...params.values()].filter((p) => p.in === "query");

    // Request body.
    let hasBody = false;
    if (op.requestBody) {
      hasBody = true;
      try {
        const body = deref(spec, op.requestBody).node;
        const types = Object.keys(body.content ?? {});
        if (types.length !== 1 || types[0] !== "application/json") {
          error(where, `the request body must be application/json only, is ${JSON.stringify(types)}`);
        }
        // A shared request body (components/requestBodies) was checked with the components.
        if (!op.requestBody.$ref)
          checkContent(body.content, ["paths", template, method, "requestBody", "content"]);
      } catch (e) {
        error(where, e.message);
      }
    }

    // Security: /v1 needs the bearer scheme (optional: {} allowed), the rest is open.
    const isV1 = template.startsWith("/v1/");
    if (isV1) {
      const sec = op.security ?? spec.security;
      if (!Array.isArray(sec) || !sec.some((s) => s && Object.hasOwn(s, "bearerAuth"))) {
        error(where, "a /v1 operation must list bearerAuth in its security");
      }
    } else if (!Array.isArray(op.security) || op.security.length !== 0) {
      error(where, "an operation outside /v1 must have `security: []` (always open)");
    }

    // Responses.
    const responses = op.responses ?? {};
    const codes = Object.keys(responses);
    if (!codes.some((c) => /^2/.test(c))) error(where, "no 2xx response");
    const needs = new Map([
      ["400", "bad framing is possible on any request"],
      ["431", "headers too large is possible on any request"],
      ["500", "an internal error is possible on any request"],
    ]);
    if (isV1) {
      needs.set("401", "a /v1 operation needs the API key when one is set");
      needs.set("503", "a /v1 operation can meet a full queue or draining");
    }
    if (pathParams.length > 0) needs.set("404", "it has path parameters");
    if (queryParams.length > 0 || pathParams.some((p) => p.name !== "table") || hasBody) {
      needs.set("422", "it takes values that can be invalid");
    }
    if (hasBody) {
      needs.set("413", "it takes a request body");
      needs.set("415", "it takes a JSON request body");
    }
    for (const [code, why] of needs) {
      if (!responses[code]) error(where, `must declare a ${code} problem response (${why})`);
    }
    for (const code of codes) {
      const r = checkResponse(code, responses[code], `${where} ${code}`, {
        etag: template.startsWith("/v1/tables/{table}"),
        optionalHeaders: ["X-Embd-Missing"],
      });
      if (r && !responses[code].$ref)
        checkContent(r.content, ["paths", template, method, "responses", code, "content"]);
    }
  }
  for (const k of Object.keys(item)) {
    if (
      !HTTP_METHODS.includes(k) &&
      !["parameters", "summary", "description", "servers", "$ref"].includes(k) &&
      !k.startsWith("x-")
    ) {
      error(template, `unexpected key ${k} in a path item`);
    }
  }
}
if (nOps === 0) error("paths", "no operations");

// ---- 7. responses to unmatched requests ----------------------------------------------------
{
  const un = spec["x-unmatched-responses"];
  if (!un || typeof un !== "object") {
    error("x-unmatched-responses", "missing: the answers to unknown paths (404) and methods (405)");
  } else {
    for (const code of ["404", "405"]) if (!un[code]) error("x-unmatched-responses", `must declare ${code}`);
    for (const [code, resp] of Object.entries(un)) {
      if (!/^[45]\d\d$/.test(code)) error("x-unmatched-responses", `${code} is not an error status`);
      checkResponse(code, resp, `x-unmatched-responses ${code}`);
    }
  }
}

for (const [msg, { count }] of compileErrors) {
  if (count > 0) warn("schemas", `${count} more schema(s) do not compile because of: ${msg}`);
}

finish(
  `${Object.keys(spec.paths ?? {}).length} paths, ${nOps} operations, ${nSchemas} schemas compiled, ${nExamples} examples validated`,
);
