// spec.mjs - helpers shared by lint.mjs and validate.mjs: load the OpenAPI document, resolve
// local $refs, match request paths to path templates, and build an ajv (JSON Schema 2020-12)
// instance that can validate against any schema inside the document by JSON pointer.
import { readFileSync } from "node:fs";
import Ajv2020 from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { parseDocument } from "yaml";

const addFormats = addFormatsModule.default ?? addFormatsModule;

export const HTTP_METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

// The $id under which the whole document is registered with ajv, so that a schema anywhere in it
// can be compiled as { $ref: SPEC_ID + "#/json/pointer" } and its own "#/components/..." refs
// resolve against the document.
export const SPEC_ID = "urn:embd:openapi";

// Reads and parses a YAML or JSON OpenAPI document. Throws an Error whose message lists every
// YAML problem (duplicate keys included) with its line and column.
export function loadSpec(file) {
  let text;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw Object.assign(new Error(`cannot read ${file}: ${e.message}`), { unreadable: true });
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const msgs = doc.errors.map((e) => e.message.split("\n")[0]);
    throw new Error(`${file} is not valid YAML:\n  ${msgs.join("\n  ")}`);
  }
  const spec = doc.toJS({ maxAliasCount: -1 });
  if (spec === null || typeof spec !== "object" || Array.isArray(spec)) {
    throw new Error(`${file}: the document is not a mapping`);
  }
  return spec;
}

// JSON pointer token escaping (RFC 6901).
export function escapeToken(token) {
  return String(token).replace(/~/g, "~0").replace(/\//g, "~1");
}

export function unescapeToken(token) {
  return token.replace(/~1/g, "/").replace(/~0/g, "~");
}

// "#/a/b" from ["a", "b"].
export function pointer(tokens) {
  return "#" + tokens.map((t) => "/" + escapeToken(t)).join("");
}

// The value a local reference ("#/components/schemas/X") points to, or undefined.
export function resolvePointer(spec, ref) {
  if (typeof ref !== "string" || !ref.startsWith("#")) return undefined;
  if (ref === "#") return spec;
  if (!ref.startsWith("#/")) return undefined;
  let node = spec;
  for (const raw of ref.slice(2).split("/")) {
    const token = unescapeToken(decodeURIComponent(raw));
    if (node === null || typeof node !== "object" || !Object.hasOwn(node, token)) {
      return undefined;
    }
    node = node[token];
  }
  return node;
}

// Follows $ref until an object without one; returns { node, ref } where ref is the pointer of
// the final object (or the given one when obj had no $ref). Throws on a dangling or circular ref.
export function deref(spec, obj, at) {
  let node = obj;
  let where = at;
  const seen = new Set();
  while (node && typeof node === "object" && typeof node.$ref === "string") {
    if (seen.has(node.$ref)) throw new Error(`circular $ref ${node.$ref}`);
    seen.add(node.$ref);
    const next = resolvePointer(spec, node.$ref);
    if (next === undefined) throw new Error(`$ref ${node.$ref} does not resolve`);
    where = node.$ref;
    node = next;
  }
  return { node, ref: where };
}

// "application/problem+json" from "Application/Problem+JSON; charset=utf-8".
export function mediaTypeBase(ct) {
  return String(ct ?? "")
    .split(";")[0]
    .trim()
    .toLowerCase();
}

export function isJsonMediaType(mt) {
  const base = mediaTypeBase(mt);
  return base === "application/json" || base.endsWith("+json");
}

// Path templates of the document, most specific first (more literal segments win, so a literal
// path beats a template that would also match it).
export function pathMatchers(spec) {
  const out = [];
  for (const template of Object.keys(spec.paths ?? {})) {
    const segs = template.split("/");
    const names = [];
    const parts = segs.map((s) => {
      const m = /^\{([^}]+)\}$/.exec(s);
      if (m) {
        names.push(m[1]);
        return "([^/]+)";
      }
      return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    });
    out.push({
      template,
      regex: new RegExp("^" + parts.join("/") + "$"),
      names,
      literal: segs.length - names.length,
    });
  }
  out.sort((a, b) => b.literal - a.literal || a.template.localeCompare(b.template));
  return out;
}

// { template, params } for a request path (query string and fragment removed), or null.
export function matchPath(matchers, rawPath) {
  const path = String(rawPath).split("#")[0].split("?")[0];
  for (const m of matchers) {
    const r = m.regex.exec(path);
    if (r) {
      const params = {};
      m.names.forEach((n, i) => (params[n] = r[i + 1]));
      return { template: m.template, params };
    }
  }
  return null;
}

// An ajv for JSON Schema 2020-12 (the OpenAPI 3.1 dialect), every error reported, OpenAPI's
// own keywords (example, discriminator, xml, externalDocs) tolerated, formats checked. The
// document is registered under SPEC_ID so compileAt() can reach any schema by pointer.
export function makeAjv(spec) {
  const ajv = new Ajv2020({ allErrors: true, strict: false, validateFormats: true });
  addFormats(ajv);
  const intRange = (lo, hi) => (n) => Number.isInteger(n) && n >= lo && n <= hi;
  ajv.addFormat("int32", { type: "number", validate: intRange(-(2 ** 31), 2 ** 31 - 1) });
  ajv.addFormat("int64", { type: "number", validate: (n) => Number.isInteger(n) });
  ajv.addFormat("float", { type: "number", validate: () => true });
  ajv.addFormat("double", { type: "number", validate: () => true });
  ajv.addSchema({ ...spec, $id: SPEC_ID, $schema: undefined });
  return ajv;
}

// A compiled validator for the schema at a local pointer ("#/components/schemas/Table").
export function compileAt(ajv, ref) {
  // Keep the pointer's own escapes (~0, ~1) and percent-encode everything else that is not an
  // unreserved URI character: ajv percent-decodes the fragment before reading the pointer.
  const encode = (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0");
  const fragment = ref
    .slice(1)
    .replace(/[^A-Za-z0-9\-._~/]/g, (c) => (c.charCodeAt(0) < 0x80 ? encode(c) : encodeURIComponent(c)));
  return ajv.compile({ $ref: SPEC_ID + "#" + fragment });
}

// ajv errors as one short string: "/results/0/score must be number; ..." .
export function formatAjvErrors(errors) {
  return (errors ?? [])
    .map((e) => {
      const where = e.instancePath || "(body)";
      let msg = `${where} ${e.message}`;
      if (e.keyword === "additionalProperties") msg += ` '${e.params.additionalProperty}'`;
      if (e.keyword === "enum") msg += ` ${JSON.stringify(e.params.allowedValues)}`;
      if (e.keyword === "const") msg += ` ${JSON.stringify(e.params.allowedValue)}`;
      return msg;
    })
    .join("; ");
}
