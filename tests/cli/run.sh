#!/usr/bin/env bash
# End-to-end tests of the embd command line: gen, pack (every input format), info, verify,
# search, and damaged stores. Usage: tests/cli/run.sh path/to/embd
# Prints "N passed, N failed" and exits non-zero when anything failed.
set -uo pipefail
embd=$(readlink -f "${1:?usage: run.sh EMBD}")
py=/usr/bin/python3
work=$(mktemp -d "${TMPDIR:-/tmp}/embd-cli-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
passed=0
failed=0

ok() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() { failed=$((failed + 1)); echo "FAIL - $1"; [ -f out.txt ] && sed 's/^/    | /' out.txt | head -20; }
# expect NAME STATUS CMD...: runs CMD, output in out.txt, checks the exit status.
expect() {
  local name=$1 want=$2
  shift 2
  "$@" >out.txt 2>&1
  local got=$?
  if [ "$got" -eq "$want" ]; then ok "$name"; else fail "$name (exit $got, want $want)"; fi
  return 0
}
# contains NAME PATTERN: out.txt (from the last expect) matches the extended regex.
contains() {
  if grep -Eq -- "$2" out.txt; then ok "$1"; else fail "$1 (no /$2/)"; fi
}

# ---- help and usage ----
expect "embd --help" 0 "$embd" --help
contains "help lists pack" "pack"
for sub in pack info verify search gen serve bench; do
  expect "embd $sub --help" 0 "$embd" "$sub" --help
done
expect "unknown command is a usage error" 2 "$embd" frobnicate
expect "pack without -o is a usage error" 2 "$embd" pack nothing.npy
expect "pack with a bad --dtype" 2 "$embd" pack x.npy -o x.emb --dtype f8

# ---- the demo table: GloVe text with readable keys ----
expect "gen demo" 0 "$embd" gen --kind demo -o demo.txt
# Two gens to one path at once: each writes its own temporary file; both succeed, one wins.
"$embd" gen --kind clusters --rows 20000 --dim 64 -o race.npy -q & p1=$!
"$embd" gen --kind clusters --rows 20000 --dim 64 -o race.npy -q & p2=$!
if wait $p1 && wait $p2 && "$embd" pack race.npy -o race.emb -e 0 -q >/dev/null 2>&1; then
  ok "two concurrent gens to one path both succeed"
else
  fail "two concurrent gens to one path both succeed"
fi
ls race.npy.tmp* >/dev/null 2>&1 && fail "concurrent gens leave no temporary file" || ok "concurrent gens leave no temporary file"
expect "gen into a missing directory fails" 1 "$embd" gen --kind demo -o no/such/dir/x.txt
expect "pack demo (glove, f16+q1)" 0 "$embd" pack demo.txt -o demo.emb --dtype f16+q1
contains "pack summary names the format" "glove"
contains "pack reports fidelity" "fidelity"
contains "pack reports recall" "recall@10"
expect "info demo" 0 "$embd" info demo.emb
contains "info shows codecs" "codecs +f16 q1"
contains "info shows keys" "keys +[0-9]+"
contains "info shows the pack metadata" "oversample_default|recall_at_10"
expect "info --json" 0 "$embd" info --json demo.emb
if $py -c 'import json,sys; d=json.load(open("out.txt")); assert d["dim"]==64 and d["keys"] and "metadata" in d' 2>/dev/null; then
  ok "info --json parses and has dim, keys, metadata"
else fail "info --json parses"; fi
expect "verify demo" 0 "$embd" verify demo.emb
expect "search by key" 0 "$embd" search demo.emb --key apple -k 5
if grep -Eq "banana|pear|cherry|grape|plum|peach|mango|lemon|strawberry|apricot|kiwi|melon|fig|lime" out.txt; then
  ok "neighbours of apple include a fruit"; else fail "neighbours of apple include a fruit"; fi
if grep -Eq " apple " out.txt; then fail "a query by key excludes its own row"; else ok "a query by key excludes its own row"; fi
expect "search by key, exact" 0 "$embd" search demo.emb --key apple -k 5 --exact
expect "search --json" 0 "$embd" search demo.emb --id 0 -k 3 --json
if $py -c 'import json; d=json.load(open("out.txt")); r=d["results"]; assert len(r)==3 and r[0]["rank"]==1 and r[0]["id"]!=0' 2>/dev/null; then
  ok "search --json has 3 ranked results without the query row"; else fail "search --json"; fi
expect "search by unknown key fails" 1 "$embd" search demo.emb --key no-such-word-xyz
expect "search by id out of range fails" 1 "$embd" search demo.emb --id 999999
expect "search with a short vector fails" 1 "$embd" search demo.emb --vector "1,2,3"
vec=$($py -c 'print(",".join(["0.5"]*64))')
expect "search by vector" 0 "$embd" search demo.emb --vector "$vec" -k 3 --metric dot
expect "search k=0 is a usage error" 2 "$embd" search demo.emb --id 1 -k 0
expect "search with the q1 x q1 first stage" 0 "$embd" search demo.emb --key apple -k 5 \
  --first-stage q1 --oversample 20
if grep -Eq "banana|pear|cherry|grape|plum|peach|mango|lemon|strawberry|apricot|kiwi|melon|fig|lime" out.txt; then
  ok "q1 x q1 first stage: neighbours of apple include a fruit"; else fail "q1 x q1 first stage: a fruit"; fi
expect "search --first-stage f32" 0 "$embd" search demo.emb --key apple -k 5 --first-stage f32
expect "search with an unknown first stage is a usage error" 2 "$embd" search demo.emb --id 1 \
  --first-stage q4

# flip_in_section IN OUT KIND AT MASK: OUT is IN with byte AT (an offset, or "half" for the
# middle) of the section of KIND, found through the section table, XORed with MASK.
flip_in_section() {
  $py - "$@" <<'PY'
import struct, sys
src, dst, kind, at, mask = sys.argv[1:]
b = bytearray(open(src, "rb").read())
count = struct.unpack_from("<I", b, 20)[0]
for i in range(count):
    k, _, off, length, crc, _ = struct.unpack_from("<IIQQII", b, 64 + 32 * i)
    if k == int(kind):
        b[off + (length // 2 if at == "half" else int(at))] ^= int(mask, 0)
open(dst, "wb").write(b)
PY
}

# ---- the interleaved q1 copy: written by default, left out on request, same answers ----
expect "info lists the interleaved q1 copy" 0 "$embd" info demo.emb
contains "info shows rows_q1i" "rows_q1i"
contains "info shows format 1.1" "v1\.1"
expect "pack --no-q1-interleave" 0 "$embd" pack demo.txt -o demo_noi.emb --dtype f16+q1 -e 0 \
  --no-q1-interleave
expect "info without the copy" 0 "$embd" info demo_noi.emb
if grep -q rows_q1i out.txt; then fail "--no-q1-interleave leaves rows_q1i out"; else
  ok "--no-q1-interleave leaves rows_q1i out"; fi
expect "verify without the copy" 0 "$embd" verify demo_noi.emb
for st in q1 q8; do
  "$embd" search demo.emb --key apple -k 10 --first-stage $st --oversample 20 --json >a.json 2>&1
  "$embd" search demo_noi.emb --key apple -k 10 --first-stage $st --oversample 20 --json >b.json 2>&1
  if $py -c 'import json; a=json.load(open("a.json"))["results"]; b=json.load(open("b.json"))["results"]; assert len(a)==10 and a==b' 2>/dev/null; then
    ok "first stage $st: the same hits and scores with and without the copy"
  else fail "first stage $st: the same hits and scores with and without the copy"; fi
done
flip_in_section demo.emb q1i_flipped.emb 9 8 0x01
expect "verify a flipped byte in rows_q1i" 1 "$embd" verify q1i_flipped.emb
contains "verify names rows_q1i" "rows_q1i"

# ---- damaged stores ----
size=$(stat -c %s demo.emb)
flip_in_section demo.emb flipped.emb 4 half 0x40 # a byte in the middle of the f16 rows
expect "info does not read rows (flipped row byte still opens)" 0 "$embd" info flipped.emb
expect "verify rejects a flipped row byte" 1 "$embd" verify flipped.emb
contains "verify names the section and the checksum" "rows_f16: CRC-32C"
head -c $((size - 1)) demo.emb >truncated.emb
expect "info rejects a truncated store" 1 "$embd" info truncated.emb
contains "truncation is named" "truncated"
printf 'NOTASTORE' | cat - demo.emb | head -c "$size" >badmagic.emb
expect "info rejects bad magic" 1 "$embd" info badmagic.emb
contains "bad magic is named" "magic"
expect "verify --json on a bad store" 1 "$embd" verify --json truncated.emb
contains "verify --json says ok false" '"ok": false'

# ---- every input format ----
if $py -c 'import numpy' 2>/dev/null; then
  $py - <<'PY'
import numpy as np, struct, json
rng = np.random.default_rng(7)
centres = rng.standard_normal((20, 96)).astype(np.float32)
x = (centres[rng.integers(0, 20, 500)] + 0.3 * rng.standard_normal((500, 96))).astype(np.float32)
np.save("t32.npy", x)
np.save("t16.npy", x.astype(np.float16))
words = ["w%d" % i for i in range(500)]
open("keys.txt", "w").write("\n".join(words) + "\n")
# fvecs
with open("t.fvecs", "wb") as f:
    for row in x:
        f.write(struct.pack("<i", 96)); f.write(row.tobytes())
# word2vec binary and text, fastText .vec, GloVe
with open("t.bin", "wb") as f:
    f.write(b"500 96\n")
    for w, row in zip(words, x):
        f.write(w.encode() + b" " + row.tobytes() + b"\n")
with open("t.vec", "w") as f:
    f.write("500 96\n")
    for w, row in zip(words, x):
        f.write(w + " " + " ".join("%.6g" % v for v in row) + "\n")
with open("t.glove.txt", "w") as f:
    for w, row in zip(words, x):
        f.write(w + " " + " ".join("%.6g" % v for v in row) + "\n")
# safetensors with two tensors (needs --tensor)
def st(path, tensors):
    hdr, blobs, off = {}, [], 0
    for name, arr, dt in tensors:
        b = arr.tobytes(); hdr[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b); off += len(b)
    h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
st("t.safetensors", [("emb.weight", x, "F32"), ("bias", x[0], "F32")])
st("t2.safetensors", [("a", x, "F32"), ("b", x[:10], "F16" if False else "F32")])
# GGUF v3, F32 token_embd.weight [96, 500] with tokens
def gstr(s): b = s.encode(); return struct.pack("<Q", len(b)) + b
kv = gstr("general.alignment") + struct.pack("<I", 4) + struct.pack("<I", 32)
kv += gstr("tokenizer.ggml.tokens") + struct.pack("<I", 9) + struct.pack("<IQ", 8, 500) + b"".join(gstr(w) for w in words)
ti = gstr("token_embd.weight") + struct.pack("<I", 2) + struct.pack("<QQ", 96, 500) + struct.pack("<I", 0) + struct.pack("<Q", 0)
head = b"GGUF" + struct.pack("<IQQ", 3, 1, 2) + kv + ti
head += b"\0" * (-len(head) % 32)
open("t.gguf", "wb").write(head + x.tobytes())
PY
  for f in t32.npy t16.npy t.fvecs t.bin t.vec t.glove.txt t.safetensors t.gguf; do
    expect "pack $f" 0 "$embd" pack "$f" -o "$f.emb" --dtype f16+q1 --eval-queries 20
    expect "verify $f.emb" 0 "$embd" verify "$f.emb"
    expect "info $f.emb" 0 "$embd" info --json "$f.emb"
    if $py -c 'import json; d=json.load(open("out.txt")); assert d["rows"]==500 and d["dim"]==96' 2>/dev/null; then
      ok "$f.emb has 500 rows x 96"; else fail "$f.emb has 500 rows x 96"; fi
  done
  for f in t.bin t.vec t.glove.txt t.gguf; do
    expect "search $f.emb by key" 0 "$embd" search "$f.emb" --key w42 -k 3
  done
  expect "pack npy with --keys" 0 "$embd" pack t32.npy -o k.emb --keys keys.txt --dtype f32 --eval-queries 0
  expect "search the --keys store by key" 0 "$embd" search k.emb --key w7 -k 1
  head -n 10 keys.txt >short-keys.txt
  expect "pack with too few keys fails" 1 "$embd" pack t32.npy -o k2.emb --keys short-keys.txt
  contains "too few keys is explained" "keys file"
  [ ! -e k2.emb ] && ok "a failed pack leaves no store" || fail "a failed pack leaves no store"
  ls k2.emb.tmp.* >/dev/null 2>&1 && fail "a failed pack leaves no temporary file" || ok "a failed pack leaves no temporary file"
  expect "pack a shard with --rows" 0 "$embd" pack t32.npy -o shard.emb --rows 100:200 --eval-queries 0
  expect "shard info" 0 "$embd" info --json shard.emb
  if $py -c 'import json; d=json.load(open("out.txt")); assert d["rows"]==100' 2>/dev/null; then
    ok "the shard has 100 rows"; else fail "the shard has 100 rows"; fi
  expect "safetensors with two 2-D tensors needs --tensor" 1 "$embd" pack t2.safetensors -o t2.emb
  expect "safetensors --tensor picks one" 0 "$embd" pack t2.safetensors -o t2.emb --tensor a --eval-queries 0
  for d in f16 q1 f32 f32+q1; do
    expect "pack --dtype $d" 0 "$embd" pack t32.npy -o "d-$d.emb" --dtype "$d" --eval-queries 20
    expect "verify --dtype $d" 0 "$embd" verify "d-$d.emb"
    expect "search --dtype $d" 0 "$embd" search "d-$d.emb" --id 3 -k 5
  done
  expect "pack --normalize --metric dot" 0 "$embd" pack t32.npy -o n.emb --normalize --metric dot
  expect "pack --json prints the metadata" 0 "$embd" pack t32.npy -o j.emb --json --eval-queries 10
  if $py -c 'import json; d=json.load(open("out.txt")); assert d["rows"]==500 and "recall_at_10" in d' 2>/dev/null; then
    ok "pack --json parses"; else fail "pack --json parses"; fi
else
  echo "skip - /usr/bin/python3 has no numpy: input-format tests skipped"
fi
# ---- bench (a tiny run: it must work and write JSON, timings are not checked) ----
expect "bench --help" 0 "$embd" bench --help
expect "bench on a small generated table" 0 "$embd" bench --rows 2000 --dim 32 --seconds 0.1 \
  --repeats 1 --bw-mib 16 --nq 64 --recall-queries 20 --json bench.json
if $py -c 'import json; d=json.load(open("bench.json")); assert d["tables"] and d["bandwidth"]' 2>/dev/null; then
  ok "bench --json writes tables and bandwidth"; else fail "bench --json writes tables and bandwidth"; fi
contains "bench checks the split and batch answers" "32/32 +64/64"
if $py -c '
import json
d = json.load(open("bench.json"))
modes = {m["mode"] for t in d["tables"] for m in t["modes"] if not m["failed"]}
assert {"q1", "q1-q1q", "two-stage", "two-stage-q1q"} <= modes, modes
assert any(m.startswith("two-stage-q1q x") for m in modes), modes
' 2>/dev/null; then
  ok "bench measures the q1 x q1 stage alone and in two-stage modes"
else fail "bench measures the q1 x q1 stage alone and in two-stage modes"; fi
expect "bench --oversample list" 0 "$embd" bench --rows 1000 --dim 16 --codec f16+q1 --seconds 0.05 \
  --repeats 1 --bw-mib 16 --nq 32 --recall-queries 8 --oversample 2,5 --json bench2.json
if $py -c '
import json
d = json.load(open("bench2.json"))
modes = {m["mode"] for t in d["tables"] for m in t["modes"]}
assert {"two-stage x2", "two-stage-q1q x2", "two-stage x5", "two-stage-q1q x5"} <= modes, modes
' 2>/dev/null; then
  ok "bench --oversample adds both first stages at each factor"
else fail "bench --oversample adds both first stages at each factor"; fi
expect "bench with a bad --oversample" 2 "$embd" bench --oversample 2,0
expect "bench with a bad option" 2 "$embd" bench --rows 0

expect "pack a missing file fails" 1 "$embd" pack does-not-exist.npy -o x.emb
printf 'garbage' >junk.npy
expect "pack a junk .npy fails" 1 "$embd" pack junk.npy -o x.emb

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
