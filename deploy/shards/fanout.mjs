// fanout.mjs - the client-side recipe for a table split by row range into shard stores
// (`embd pack --rows A:B`), each served by its own embd (its own Deployment and Service).
//
// embd has no cluster manager and no proxy that merges answers: the client does the fan-out.
// A shard's row ids are local (0 .. rows-1); its store's metadata says where it starts
// (metadata.source.rows_begin), so global id = rows_begin + local id. Then:
//   - search by vector: send the query to every shard at once, map each result to its global
//     id, merge by score (cos and dot: highest first; l2: lowest distance first; ties to the
//     lower id, as embd does), keep k;
//   - search by id or key: fetch the row from the shard that holds it (by range for an id, by
//     asking every shard for a key), then search by that vector, excluding the row on its
//     shard (what embd does for one table);
//   - gather: split the ids by shard, one request per shard, put the rows back in order.
// With `exact: true` the merged answer is the unsharded one. With two-stage search each shard
// keeps k x oversample candidates of its own rows, a superset of the unsharded candidates, so
// recall is never lower (give `oversample` explicitly: shards packed apart may default to
// different factors). A shard that fails fails the query: a partial answer would lose rows
// silently.
//
// Node.js 18+ (global fetch), no dependencies. As a library:
//   import { ShardedTable } from "./fanout.mjs";
//   const t = await ShardedTable.open(["http://embd-shard-0", "http://embd-shard-1"], "items");
//   const { results } = await t.search({ key: "apple", k: 10 });
// From the command line:
//   node fanout.mjs search --table T --key K [-k 10] [--exact] URL...
//   node fanout.mjs bench --table T --single URL [--queries N] [-k 10] [--exact]
//                         [--oversample N] [--json FILE] URL...
// (bench: the latency of the same queries against one server and fanned out over the shards).

export class ShardedTable {
  /** Use ShardedTable.open. */
  constructor(table, shards, opts) {
    this.table = table;
    this.shards = shards; // sorted by begin: { url, begin, rows }
    this.rows = shards.reduce((n, s) => n + s.rows, 0);
    this.dim = shards[0].dim;
    this.metric = shards[0].metric;
    this.headers = { "Content-Type": "application/json", ...(opts.headers ?? {}) };
  }

  /** Reads each shard's table description and checks that the shards tile [0, rows) exactly. */
  static async open(urls, table, opts = {}) {
    const info = await Promise.all(
      urls.map(async (url) => {
        const t = await call(url, `/v1/tables/${encodeURIComponent(table)}`, opts.headers);
        return {
          url,
          rows: t.rows,
          dim: t.dim,
          metric: t.metric,
          begin: t.metadata?.source?.rows_begin ?? 0,
        };
      }),
    );
    info.sort((a, b) => a.begin - b.begin);
    let next = 0;
    for (const s of info) {
      if (s.begin !== next)
        throw new Error(
          `${s.url}: shard starts at row ${s.begin}, expected ${next} (${s.begin > next ? "a gap" : "an overlap"})`,
        );
      if (s.dim !== info[0].dim || s.metric !== info[0].metric)
        throw new Error(`${s.url}: dim ${s.dim} metric ${s.metric} differ from ${info[0].url}`);
      next += s.rows;
    }
    return new ShardedTable(table, info, opts);
  }

  /** The shard holding global row id, or undefined. */
  shardOf(id) {
    return this.shards.find((s) => id >= s.begin && id < s.begin + s.rows);
  }

  /** One row by global id or by key: { id, key?, vector }. */
  async row({ id, key }) {
    if (key !== undefined) {
      const found = await Promise.all(
        this.shards.map((s) =>
          call(
            s.url,
            this.path(`/keys/${encodeURIComponent(key)}`),
            this.headers,
            undefined,
            [404],
          ),
        ),
      );
      const i = found.findIndex((r) => r !== null);
      if (i < 0) throw new ShardError(404, `no row of key '${key}' in any shard`);
      return { ...found[i], id: found[i].id + this.shards[i].begin };
    }
    const s = this.shardOf(id);
    if (!s) throw new ShardError(404, `no row ${id}: the shards hold 0..${this.rows - 1}`);
    const r = await call(s.url, this.path(`/rows/${id - s.begin}`), this.headers);
    return { ...r, id };
  }

  /**
   * Nearest neighbours of q.vector, q.id or q.key; other members (k, metric, exact, oversample,
   * include_vectors, exclude_ids as global ids) are passed to every shard.
   */
  async search(q) {
    const { id, key, vector, exclude_ids: exclude = [], ...rest } = q;
    let vec = vector;
    const skip = [...exclude];
    if (vec === undefined) {
      const r = await this.row({ id, key });
      vec = r.vector;
      skip.push(r.id); // a query by id or key excludes its own row, as embd does
    }
    const answers = await Promise.all(
      this.shards.map((s) => {
        const local = skip
          .filter((g) => g >= s.begin && g < s.begin + s.rows)
          .map((g) => g - s.begin);
        const body = { ...rest, vector: vec, ...(local.length ? { exclude_ids: local } : {}) };
        return call(s.url, this.path("/search"), this.headers, body);
      }),
    );
    const metric = answers[0].metric;
    const all = answers.flatMap((a, i) =>
      a.results.map((r) => ({ ...r, id: r.id + this.shards[i].begin })),
    );
    const lowFirst = metric === "l2";
    all.sort((a, b) =>
      a.score === b.score ? a.id - b.id : lowFirst ? a.score - b.score : b.score - a.score,
    );
    const k = rest.k ?? 10;
    return { results: all.slice(0, k), metric, k, mode: answers[0].mode };
  }

  /** Rows in request order; absent ids are null and listed (by position) in missing. */
  async gather(ids) {
    const parts = this.shards.map(() => ({ pos: [], ids: [] }));
    const vectors = new Array(ids.length).fill(null);
    const missing = [];
    ids.forEach((g, pos) => {
      const i = this.shards.findIndex((s) => g >= s.begin && g < s.begin + s.rows);
      if (i < 0) missing.push(pos);
      else {
        parts[i].pos.push(pos);
        parts[i].ids.push(g - this.shards[i].begin);
      }
    });
    await Promise.all(
      parts.map(async (p, i) => {
        if (!p.ids.length) return;
        const r = await call(this.shards[i].url, this.path("/gather"), this.headers, {
          ids: p.ids,
        });
        r.vectors.forEach((v, j) => {
          vectors[p.pos[j]] = v;
        });
      }),
    );
    return missing.length ? { vectors, missing } : { vectors };
  }

  path(rest) {
    return `/v1/tables/${encodeURIComponent(this.table)}${rest}`;
  }
}

export class ShardError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** One request; JSON in and out. A status in `allow` answers null; any other error throws. */
async function call(url, path, headers = {}, body = undefined, allow = []) {
  let res;
  try {
    res = await fetch(url + path, {
      method: body === undefined ? "GET" : "POST",
      headers: body === undefined ? headers : { "Content-Type": "application/json", ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ShardError(503, `${url}: ${e.cause?.message ?? e.message}`);
  }
  const text = await res.text();
  if (allow.includes(res.status)) return null;
  if (!res.ok) {
    let detail = text;
    try {
      detail = JSON.parse(text).detail ?? text;
    } catch {}
    throw new ShardError(res.status, `${url}${path}: ${res.status} ${detail}`);
  }
  return JSON.parse(text);
}

// ---- command line ----------------------------------------------------------------------------

function parse(argv) {
  const o = { urls: [], k: 10, exact: false, queries: 1000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => argv[++i];
    if (a === "--table") o.table = v();
    else if (a === "--key") o.key = v();
    else if (a === "--id") o.id = Number(v());
    else if (a === "--vector") o.vector = v().split(",").map(Number);
    else if (a === "-k") o.k = Number(v());
    else if (a === "--exact") o.exact = true;
    else if (a === "--oversample") o.oversample = Number(v());
    else if (a === "--single") o.single = v();
    else if (a === "--queries") o.queries = Number(v());
    else if (a === "--json") o.json = v();
    else if (a.startsWith("-")) throw new Error(`unknown option ${a}`);
    else o.urls.push(a.replace(/\/$/, ""));
  }
  if (!o.table || !o.urls.length) throw new Error("give --table and the shard URLs");
  return o;
}

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function summary(name, ms) {
  const s = [...ms].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  return {
    name,
    queries: s.length,
    mean_ms: +mean.toFixed(3),
    p50_ms: +pct(s, 50).toFixed(3),
    p90_ms: +pct(s, 90).toFixed(3),
    p99_ms: +pct(s, 99).toFixed(3),
  };
}

// The same queries against one server with the whole table and fanned out over the shards,
// one at a time and interleaved (A B, B A, ...), so that a change in the machine's load hits
// both sides alike.
async function bench(o) {
  const t = await ShardedTable.open(o.urls, o.table);
  const single = await ShardedTable.open([o.single], o.table);
  if (single.rows !== t.rows)
    throw new Error(`--single has ${single.rows} rows, the shards ${t.rows}`);
  // Queries: rows at a fixed stride through the table, so runs are comparable; their vectors are
  // fetched first so both sides send the same vector queries.
  const ids = Array.from({ length: o.queries }, (_, i) =>
    Math.floor(((i + 0.5) * t.rows) / o.queries),
  );
  const vecs = [];
  for (let i = 0; i < ids.length; i += 500)
    // within the servers' --max-batch
    vecs.push(...(await single.gather(ids.slice(i, i + 500))).vectors);
  const opts = { k: o.k, exact: o.exact, ...(o.oversample ? { oversample: o.oversample } : {}) };
  const out = {
    table: o.table,
    rows: t.rows,
    dim: t.dim,
    shards: o.urls.length,
    ...opts,
    results: [],
  };
  for (const by of ["vector", "id"]) {
    const q = (i) => (by === "vector" ? { ...opts, vector: vecs[i] } : { ...opts, id: ids[i] });
    // By id one server looks the row up itself; fanned out it is a row fetch, then the searches.
    const one = (i) => call(o.single, single.path("/search"), {}, q(i));
    const fan = (i) => t.search(q(i));
    for (let i = 0; i < Math.min(100, o.queries); i++) await Promise.all([one(i), fan(i)]); // warm up
    const ms = { one: [], fan: [] };
    let same = 0;
    for (let i = 0; i < o.queries; i++) {
      const r = {};
      for (const side of i % 2 ? ["one", "fan"] : ["fan", "one"]) {
        const t0 = performance.now();
        r[side] = await (side === "one" ? one(i) : fan(i));
        ms[side].push(performance.now() - t0);
      }
      same += r.one.results.map((x) => x.id).join() === r.fan.results.map((x) => x.id).join();
    }
    out.results.push(
      summary(`one server, by ${by}`, ms.one),
      summary(`${o.urls.length} shards, by ${by}`, ms.fan),
    );
    out[`same_answers_by_${by}`] = same;
  }
  return out;
}

async function main() {
  const [cmd, ...rest] = process.argv.slice(2);
  const o = parse(rest);
  if (cmd === "search") {
    const t = await ShardedTable.open(o.urls, o.table);
    const q = { k: o.k, exact: o.exact };
    if (o.oversample) q.oversample = o.oversample;
    if (o.key !== undefined) q.key = o.key;
    else if (o.id !== undefined) q.id = o.id;
    else if (o.vector) q.vector = o.vector;
    else throw new Error("give --key, --id or --vector");
    console.log(JSON.stringify(await t.search(q)));
  } else if (cmd === "bench") {
    if (!o.single) throw new Error("bench needs --single URL (one server with the whole table)");
    const r = await bench(o);
    if (o.json) (await import("node:fs")).writeFileSync(o.json, JSON.stringify(r, null, 2));
    console.log(
      `${r.rows} rows x ${r.dim}, k=${r.k}, ${r.exact ? "exact" : `two-stage${r.oversample ? `, oversample ${r.oversample}` : ""}`}; ` +
        `same answers: ${r.same_answers_by_vector}/${o.queries} by vector, ${r.same_answers_by_id}/${o.queries} by id`,
    );
    console.log("| queries, one at a time | mean ms | p50 ms | p90 ms | p99 ms |");
    console.log("|---|---:|---:|---:|---:|");
    for (const x of r.results)
      console.log(`| ${x.name} | ${x.mean_ms} | ${x.p50_ms} | ${x.p90_ms} | ${x.p99_ms} |`);
  } else {
    throw new Error("usage: node fanout.mjs search|bench --table T [options] URL...");
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => {
    console.error(`fanout.mjs: ${e.message}`);
    process.exit(1);
  });
}
