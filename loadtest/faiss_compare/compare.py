#!/usr/bin/python3
"""faiss next to `embd bench` on the same rows and queries (issue 4).

Reads base.npy (f32 rows) and queries.npy (f32 queries), builds faiss IndexFlatIP (f32),
IndexScalarQuantizer QT_fp16 (inner product) and IndexBinaryFlat on sign bits (packbits of
x >= 0), and measures queries/s one query at a time and in batches of 64, plus recall@k against
exact f32 search (IndexFlatIP on the first --recall-queries queries, as embd bench does). Then
reads embd bench's JSON for the stores packed from the same base.npy and prints both side by
side with the ratios embd / faiss. A benchmark, never a test: nothing asserts on time.

Timing: like embd bench, each measurement is --repeats slices of --seconds / --repeats; the best
and the median slice are reported.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

import faiss

try:
    import threadpoolctl
except ImportError:  # reported, not required
    threadpoolctl = None


def measure(fn, seconds, repeats):
    """Runs fn(i) -> units in slices; returns (best, median) units per second."""
    rates = []
    it = 0
    for _ in range(repeats):
        units, t0 = 0, time.perf_counter()
        while True:
            units += fn(it)
            it += 1
            t = time.perf_counter()
            if t - t0 >= seconds / repeats:
                break
        rates.append(units / (t - t0))
    rates.sort()
    return rates[-1], float(np.median(rates))


def recall(found, truth, k):
    hit = 0
    for f, t in zip(found, truth):
        hit += len(set(int(x) for x in f[:k] if x >= 0) & set(int(x) for x in t[:k]))
    return hit / (len(truth) * k)


def bench_index(name, index, q, k, seconds, repeats, rq, truth, threads):
    """Single queries on one OpenMP thread (embd's "1t" column is one thread too; with more,
    faiss's OpenMP team spins and waits around every single-query call, which on a loaded
    machine cost it up to 10x), batches of 64 on every thread."""
    nq = len(q)
    batch = min(64, nq)

    def one(i):
        j = i % nq
        index.search(q[j:j + 1], k)
        return 1

    def b64(i):
        j = (i * batch) % (nq - batch + 1)
        index.search(q[j:j + batch], k)
        return batch

    faiss.omp_set_num_threads(1)
    one_best, one_med = measure(one, seconds, repeats)
    faiss.omp_set_num_threads(threads)
    b_best, b_med = measure(b64, seconds, repeats)
    _, ids = index.search(q[:rq], k)
    r = recall(ids, truth, k)
    print(f"faiss {name}: 1-query {one_best:.0f} q/s, batch64 {b_best:.0f} q/s, recall {r:.3f}",
          file=sys.stderr)
    return {"index": name, "one_best": one_best, "one_median": one_med, "b64_best": b_best,
            "b64_median": b_med, "recall": r, "one_threads": 1, "b64_threads": threads}


def mapped_blas():
    """The BLAS/LAPACK libraries this process has mapped, symlinks resolved: which
    implementation faiss really calls (Debian's libblas.so.3 is an alternatives link to the
    reference BLAS, OpenBLAS, BLIS or MKL, and threadpoolctl does not see the reference one)."""
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                name = os.path.basename(path).lower()
                if path.startswith("/") and any(w in name for w in ("blas", "lapack", "blis", "mkl")):
                    libs.add((path, os.path.realpath(path)))
    except OSError:
        pass
    return [{"path": p, "real": r} for p, r in sorted(libs)]


def blas_info():
    info = {"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
            "faiss_version": faiss.__version__, "numpy_version": np.__version__,
            "faiss_omp_threads": faiss.omp_get_max_threads(), "pools": [],
            "mapped": mapped_blas()}
    if threadpoolctl is not None:
        for p in threadpoolctl.threadpool_info():
            info["pools"].append({key: p.get(key) for key in
                                  ("user_api", "internal_api", "prefix", "filepath", "version",
                                   "architecture", "threading_layer", "num_threads")})
    return info


def embd_modes(path):
    """{(codecs, mode): mode dict} from embd bench's JSON."""
    with open(path) as f:
        run = json.load(f)
    out = {}
    for t in run["tables"]:
        for m in t["modes"]:
            if not m.get("failed"):
                out[(t["codecs"].strip(), m["mode"])] = m
    return run, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True, help="f32 .npy rows (what the stores were packed from)")
    ap.add_argument("--queries", required=True, help="f32 .npy queries")
    ap.add_argument("--embd-json", required=True, help="embd bench --json output on the stores")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement (default 1)")
    ap.add_argument("--repeats", type=int, default=5, help="slices per measurement (default 5)")
    ap.add_argument("--nq", type=int, default=1000, help="queries timed (default 1000)")
    ap.add_argument("--recall-queries", type=int, default=200, help="default 200, as embd bench")
    ap.add_argument("--json", help="write faiss figures, BLAS info and the comparison here")
    a = ap.parse_args()

    x = np.ascontiguousarray(np.load(a.base, mmap_mode="r"), dtype=np.float32)
    q = np.ascontiguousarray(np.load(a.queries)[:a.nq], dtype=np.float32)
    n, d = x.shape
    rq = min(a.recall_queries, len(q))
    k = a.k

    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    _, truth = flat.search(q[:rq], k)  # exact f32 ground truth, as embd bench computes it

    sq = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    sq.train(x)
    sq.add(x)

    nbits = (d + 7) // 8 * 8
    binary = faiss.IndexBinaryFlat(nbits)
    binary.add(np.packbits(x >= 0, axis=1))
    qbits = np.packbits(q >= 0, axis=1)

    blas = blas_info()  # after faiss ran a BLAS search, so its library is loaded
    th = os.cpu_count() or 1
    res = {
        "flat_f32": bench_index("IndexFlatIP f32", flat, q, k, a.seconds, a.repeats, rq, truth,
                                th),
        "sq_fp16": bench_index("IndexScalarQuantizer fp16", sq, q, k, a.seconds, a.repeats, rq,
                               truth, th),
        "binary": bench_index("IndexBinaryFlat sign bits", binary, qbits, k, a.seconds, a.repeats,
                              rq, truth, th),
    }

    run, modes = embd_modes(a.embd_json)
    bw = run["bandwidth"]
    pairs = [  # (faiss index, embd store codecs, embd mode)
        ("flat_f32", "f16", "f16"),
        ("sq_fp16", "f16", "f16"),
        ("binary", "q1", "q1"),  # the 1-bit stage, q1 x q8
        ("binary", "q1", "q1-q1q"),  # the 1-bit stage, q1 x q1 (binary x binary, with scales)
        ("flat_f32", "f16 q1", "two-stage"),
        ("flat_f32", "f16 q1", "two-stage-q1q"),
    ]
    # Two-stage at the other oversampling factors embd bench measured (--oversample), with
    # either first stage, in the order of the factor.
    extra = sorted((m for c, m in modes if c == "f16 q1" and " x" in m),
                   key=lambda m: (int(m.rsplit("x", 1)[1]), m))
    pairs += [("flat_f32", "f16 q1", m) for m in extra]
    rows = []
    for fk, codecs, mode in pairs:
        f, m = res[fk], modes.get((codecs, mode))
        if m is None:
            continue
        rows.append({
            "faiss": f["index"], "embd": f"{mode} ({codecs.replace(' ', '+')} store)",
            "faiss_one": f["one_best"], "embd_one": m["one_thread"]["qps_best"],
            "embd_split": m["split_all_threads"]["qps_best"],
            "faiss_b64": f["b64_best"], "embd_b64_one": m["batch64_one_thread"]["qps_best"],
            "embd_b64_all": m["batch64_all_threads"]["qps_best"],
            "faiss_recall": f["recall"], "embd_recall": m["recall"],
        })

    print(f"\n{n} x {d}, k={k}, {len(q)} queries timed, recall@{k} on {rq} vs exact f32; "
          f"faiss {faiss.__version__}, 1 OpenMP thread for single queries, "
          f"{blas['faiss_omp_threads']} for batches; "
          f"read bandwidth 1t {bw['one_thread_gbs_best']:.2f} GB/s, "
          f"all {bw['all_threads_gbs_best']:.2f} GB/s")
    for p in blas["pools"]:
        print(f"BLAS: {p['internal_api']} {p['version']} kernel {p['architecture']}, "
              f"{p['num_threads']} threads ({p['filepath']})")
    for m in blas["mapped"]:
        print(f"mapped: {m['path']} -> {m['real']}")
    if threadpoolctl is None:
        print("BLAS: threadpoolctl not installed (apt-get install python3-threadpoolctl)")
    print("OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s in this run"
          % (blas["OPENBLAS_CORETYPE"], blas["OPENBLAS_L2_SIZE"]))
    print("\nqueries/s, best of the slices; x = embd / faiss")
    hdr = ("faiss index", "embd mode", "faiss 1q", "embd 1t", "x", "embd split", "x",
           "faiss b64", "embd b64 1t", "x", "embd b64 all", "x", "faiss rec", "embd rec")
    fmt = "{:<26} {:<36} {:>9} {:>9} {:>6} {:>10} {:>6} {:>9} {:>11} {:>6} {:>12} {:>6} {:>9} {:>8}"
    print(fmt.format(*hdr))
    for r in rows:
        print(fmt.format(
            r["faiss"], r["embd"], f"{r['faiss_one']:.0f}", f"{r['embd_one']:.0f}",
            f"{r['embd_one'] / r['faiss_one']:.2f}", f"{r['embd_split']:.0f}",
            f"{r['embd_split'] / r['faiss_one']:.2f}", f"{r['faiss_b64']:.0f}",
            f"{r['embd_b64_one']:.0f}", f"{r['embd_b64_one'] / r['faiss_b64']:.2f}",
            f"{r['embd_b64_all']:.0f}", f"{r['embd_b64_all'] / r['faiss_b64']:.2f}",
            f"{r['faiss_recall']:.3f}",
            "-" if r["embd_recall"] is None else f"{r['embd_recall']:.3f}"))

    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": n, "dim": d, "k": k, "queries": len(q), "recall_queries": rq,
                       "blas": blas, "faiss": res, "comparison": rows, "embd": run}, f, indent=1)


if __name__ == "__main__":
    main()
