// check.mjs - the shard recipe (fanout.mjs) against real servers on loopback.
//
//   node check.mjs path/to/embd
//
// Generates a clustered table, packs it whole and as two uneven shards (`embd pack --rows`),
// serves the whole table and each shard with its own `embd serve` on 127.0.0.1 (port 0), and
// checks that the fan-out answers as the whole table does: exact searches by vector, id and key
// give the same ids and scores; two-stage searches (explicit oversample) reach at least the
// whole table's recall against exact; gathers across both shards, with a missing id, match;
// a shard that is down fails the query with its URL; shards that overlap or leave a gap are
// refused at open. Every wait is bounded; nothing asserts on time.
// Closes with "shards: N passed, N failed"; exit status 0 only when all passed.
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ShardedTable } from "./fanout.mjs";

const embd = process.argv[2] && path.resolve(process.argv[2]);
if (!embd || !fs.existsSync(embd)) {
  console.error("usage: node check.mjs path/to/embd");
  process.exit(2);
}
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "embd-shards-"));
const servers = [];
let passed = 0;
let failed = 0;

function report(name, problem) {
  if (!problem) {
    passed++;
    console.log(`ok   - ${name}`);
  } else {
    failed++;
    console.log(`FAIL - ${name}\n     | ${problem}`);
  }
}

function run(...args) {
  execFileSync(embd, args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

// Starts `embd serve` on 127.0.0.1:0 and resolves with its base URL once it logs "listening".
function serve(store) {
  return new Promise((resolve, reject) => {
    const p = spawn(
      embd,
      ["serve", "--listen", "127.0.0.1:0", "--threads", "1", "--shutdown-delay", "0", store],
      {
        cwd: dir,
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    servers.push(p);
    let log = "";
    const timer = setTimeout(
      () => reject(new Error(`${store}: not listening after 20 s: ${log}`)),
      20000,
    );
    p.stderr.on("data", (d) => {
      log += d;
      const m = /"url":"(http:\/\/127\.0\.0\.1:[0-9]+)"/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], proc: p });
      }
    });
    p.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${store}: exited with ${code}: ${log}`));
    });
  });
}

function stop(s) {
  return new Promise((resolve) => {
    if (s.proc.exitCode !== null) return resolve();
    const timer = setTimeout(() => s.proc.kill("SIGKILL"), 10000);
    s.proc.removeAllListeners("exit");
    s.proc.on("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    s.proc.kill("SIGTERM");
  });
}

const ids = (a) => a.results.map((r) => r.id);
function sameAnswer(a, b) {
  if (ids(a).join() !== ids(b).join()) return `ids ${ids(a)} vs ${ids(b)}`;
  for (let i = 0; i < a.results.length; i++)
    if (Math.abs(a.results[i].score - b.results[i].score) > 1e-6)
      return `score ${a.results[i].score} vs ${b.results[i].score} at rank ${i}`;
  return null;
}

async function main() {
  const rows = 6000;
  const split = 2500;
  run(
    "gen",
    "--kind",
    "clusters",
    "--rows",
    String(rows),
    "--dim",
    "64",
    "--seed",
    "3",
    "-o",
    "in.npy",
    "--keys-out",
    "keys.txt",
    "-q",
  );
  run("pack", "in.npy", "-o", "all.emb", "--keys", "keys.txt", "-q");
  run("pack", "in.npy", "-o", "s0.emb", "--keys", "keys.txt", "--rows", `0:${split}`, "-q");
  run("pack", "in.npy", "-o", "s1.emb", "--keys", "keys.txt", "--rows", `${split}:${rows}`, "-q");
  const keys = fs.readFileSync(path.join(dir, "keys.txt"), "utf8").split("\n");
  // Each store named t so every server serves table "t".
  for (const f of ["all", "s0", "s1"])
    fs.renameSync(path.join(dir, `${f}.emb`), path.join(dir, `${f}-t.emb`));
  const [all, s0, s1] = await Promise.all(["t=all-t.emb", "t=s0-t.emb", "t=s1-t.emb"].map(serve));

  const whole = await ShardedTable.open([all.url], "t");
  const sharded = await ShardedTable.open([s1.url, s0.url], "t"); // any order
  report(
    "shards tile the table",
    sharded.rows === rows && sharded.shards[1].begin === split
      ? null
      : JSON.stringify(sharded.shards),
  );

  const probe = [0, 1, split - 1, split, split + 1, rows - 1, 77, 3333, 4999, 1234];
  let problem = null;
  for (const id of probe) {
    const a = await whole.search({ id, k: 10, exact: true });
    const b = await sharded.search({ id, k: 10, exact: true });
    problem ??= sameAnswer(a, b) && `id ${id}: ${sameAnswer(a, b)}`;
    if (ids(b).includes(id)) problem ??= `id ${id}: the query row is in its own answer`;
  }
  report("exact search by id: the same answer as the whole table", problem);

  problem = null;
  const vecs = (await whole.gather(probe)).vectors;
  for (const [i, v] of vecs.entries()) {
    for (const metric of ["cos", "dot", "l2"]) {
      const a = await whole.search({ vector: v, k: 7, exact: true, metric });
      const b = await sharded.search({ vector: v, k: 7, exact: true, metric });
      problem ??= sameAnswer(a, b) && `row ${probe[i]} ${metric}: ${sameAnswer(a, b)}`;
    }
  }
  report("exact search by vector (cos, dot, l2): the same answer", problem);

  problem = null;
  for (const id of [5, split + 5, rows - 2]) {
    const a = await whole.search({ key: keys[id], k: 5, exact: true });
    const b = await sharded.search({ key: keys[id], k: 5, exact: true });
    problem ??= sameAnswer(a, b) && `key ${keys[id]}: ${sameAnswer(a, b)}`;
  }
  report("exact search by key (keys on both shards): the same answer", problem);

  problem = null;
  let recallWhole = 0;
  let recallSharded = 0;
  for (const id of probe) {
    const exact = new Set(ids(await whole.search({ id, k: 10, exact: true })));
    const a = ids(await whole.search({ id, k: 10, oversample: 2 }));
    const b = ids(await sharded.search({ id, k: 10, oversample: 2 }));
    const ra = a.filter((x) => exact.has(x)).length;
    const rb = b.filter((x) => exact.has(x)).length;
    recallWhole += ra;
    recallSharded += rb;
    if (rb < ra) problem ??= `id ${id}: recall ${rb}/10 sharded < ${ra}/10 whole`;
  }
  report(
    `two-stage search (oversample 2): recall@10 ${(recallSharded / probe.length / 10).toFixed(2)} sharded >= ${(recallWhole / probe.length / 10).toFixed(2)} whole, query by query`,
    problem,
  );

  const want = [3, split + 10, rows, 0, split - 1, rows + 5, split];
  const ga = await whole.gather(want);
  const gb = await sharded.gather(want);
  report(
    "gather across both shards, with missing ids",
    JSON.stringify(ga) === JSON.stringify(gb) && JSON.stringify(gb.missing) === "[2,5]"
      ? null
      : `${JSON.stringify(gb.missing)} vs ${JSON.stringify(ga.missing)}`,
  );

  try {
    await ShardedTable.open([s0.url, s0.url], "t");
    report("overlapping shards refused", "opened");
  } catch (e) {
    report("overlapping shards refused", /overlap/.test(e.message) ? null : e.message);
  }
  try {
    await ShardedTable.open([s1.url], "t");
    report("a missing shard (gap) refused", "opened");
  } catch (e) {
    report("a missing shard (gap) refused", /gap/.test(e.message) ? null : e.message);
  }

  await stop(s1);
  try {
    await sharded.search({ id: 10, k: 5 });
    report("a shard that is down fails the query", "answered");
  } catch (e) {
    report(
      "a shard that is down fails the query, naming it",
      e.message.includes(s1.url) ? null : e.message,
    );
  }
}

let status = 0;
try {
  await main();
} catch (e) {
  report("the check ran to the end", e.stack);
}
await Promise.all(servers.filter((p) => p.exitCode === null).map((proc) => stop({ proc })));
fs.rmSync(dir, { recursive: true, force: true });
console.log(`shards: ${passed} passed, ${failed} failed`);
status = failed ? 1 : 0;
process.exit(status);
