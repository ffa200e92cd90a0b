#!/usr/bin/env bash
# Regenerates the seed corpora of tests/fuzz/corpus/ from the project's own tools: embd gen and
# embd pack for stores and text tables, /usr/bin/python3 with numpy for the binary formats, and
# hand-written requests and numbers. Small inputs on purpose (a fuzzer mutates small files
# fastest); each one is a real file of its kind. The output is committed; rerun this after a
# format change and commit the difference.
#
# usage: tests/fuzz/make_corpus.sh [path/to/embd]   (default build-ci/embd, else build*/embd)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
embd=${1:-}
if [ -z "$embd" ]; then
  for c in "$root"/build-ci/embd "$root"/build*/embd; do
    [ -x "$c" ] && embd=$c && break
  done
fi
[ -x "$embd" ] || { echo "make_corpus.sh: build embd first (or pass its path)" >&2; exit 1; }
py=/usr/bin/python3
$py -c 'import numpy' || { echo "make_corpus.sh: $py needs numpy (python3-numpy)" >&2; exit 1; }

corpus=$here/corpus
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# ---- text tables from embd gen: GloVe, word2vec text; keys lists ----
"$embd" gen --kind demo -o demo.txt -q
mkdir -p "$corpus"/{glove,word2vec_text,word2vec,keys,store}
head -n 4 demo.txt | cut -d' ' -f1-9 >"$corpus/glove/demo4x8.txt"
head -n 3 demo.txt | cut -d' ' -f1-3 | tr '\n' '|' | sed 's/|$//' | tr '|' '\n' \
  >"$corpus/glove/no_final_newline.txt"
printf 'new york 0.5 -1.25e-3\r\nlos angeles 1 2\r\n' >"$corpus/glove/spaces_crlf.txt"
{ echo "4 8"; head -n 4 demo.txt | cut -d' ' -f1-9; } >"$corpus/word2vec_text/demo4x8.vec"
printf '2 3\nnan 1 2 3\ninf 4 5 6\n' >"$corpus/word2vec_text/number_words.vec"
cut -d' ' -f1 demo.txt | head -n 40 >"$corpus/keys/demo40.txt"
printf 'apple\nbanana\napple\n\n\xc3\xa9t\xc3\xa9\na/b\nbanana\r\nx' >"$corpus/keys/duplicates.txt"
seq 1 200 | sed 's/^/item/' >"$corpus/keys/items200.txt"

# ---- stores: embd pack in every codec, with and without keys ----
head -n 5 demo.txt | cut -d' ' -f1-17 >small.txt # 5 rows x 16
"$embd" pack small.txt -o s_f16q1.emb -q -e 0 >/dev/null
"$embd" pack small.txt -o s_f32.emb -q -e 0 --dtype f32 --metric l2 >/dev/null
"$embd" pack small.txt -o s_q1.emb -q -e 0 --dtype q1 --metric dot >/dev/null
"$embd" pack small.txt -o s_f32q1.emb -q -e 5 --dtype f32+q1 --normalize >/dev/null
"$embd" pack small.txt -o s_f16.emb -q -e 0 --dtype f16 >/dev/null
$py - <<'PY'
import numpy as np
rng = np.random.default_rng(3)
np.save("r130.npy", rng.standard_normal((3, 130)).astype(np.float32)) # q1 tail block
np.save("r2.npy", rng.standard_normal((2, 2)).astype(np.float32))
PY
"$embd" pack r130.npy -o s_q1_dim130_nokeys.emb -q -e 0 --dtype f16+q1 >/dev/null
"$embd" pack r2.npy -o s_f32_nokeys.emb -q -e 0 --dtype f32 >/dev/null
cp s_*.emb "$corpus/store/"

# ---- binary formats: numpy and struct ----
mkdir -p "$corpus"/{npy,safetensors,gguf,fvecs}
$py - "$corpus" <<'PY'
import io, json, struct, sys
import numpy as np
out = sys.argv[1]
rng = np.random.default_rng(11)
x = rng.standard_normal((4, 8)).astype(np.float32)
words = ["apple", "pear", "plum", "fig"]

def save(fmt, name, data):
    with open("%s/%s/%s" % (out, fmt, name), "wb") as f:
        f.write(data)

def npy(arr, version=None):
    b = io.BytesIO()
    if version is None:
        np.save(b, arr)
    else:
        np.lib.format.write_array(b, arr, version=version)
    return b.getvalue()

save("npy", "f32_4x8.npy", npy(x))
save("npy", "f16_4x8.npy", npy(x.astype(np.float16)))
save("npy", "f64_4x8.npy", npy(x.astype(np.float64)))
save("npy", "v2_f32.npy", npy(x[:2], (2, 0)))
save("npy", "v3_f32.npy", npy(x[:2], (3, 0)))
save("npy", "fortran.npy", npy(np.asfortranarray(x)))
save("npy", "big_endian.npy", npy(x.astype(">f4")))
save("npy", "one_d.npy", npy(x[0]))
save("npy", "three_d.npy", npy(x.reshape(2, 2, 8)))
save("npy", "int32.npy", npy(np.arange(8, dtype=np.int32).reshape(2, 4)))

def st(tensors, meta=None):
    hdr, blobs, off = {}, [], 0
    if meta is not None:
        hdr["__metadata__"] = meta
    for name, raw, dt, shape in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)

bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)
save("safetensors", "f32.safetensors", st([("emb.weight", x.tobytes(), "F32", [4, 8])]))
save("safetensors", "f16_meta.safetensors",
     st([("w", x.astype(np.float16).tobytes(), "F16", [4, 8])], {"format": "pt"}))
save("safetensors", "bf16_and_bias.safetensors",
     st([("emb", bf16.tobytes(), "BF16", [4, 8]), ("bias", x[0].tobytes(), "F32", [8])]))
save("safetensors", "two_2d.safetensors",
     st([("a", x.tobytes(), "F32", [4, 8]), ("b", x[:2].tobytes(), "F32", [2, 8])]))

def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b

def gguf(version, ggml_type, dims, data, tokens=None, align=32, extra_kv=b"", n_extra=0):
    kv, n_kv = extra_kv, n_extra
    kv += gstr("general.architecture") + struct.pack("<I", 8) + gstr("llama")
    n_kv += 1
    if align != 32:
        kv += gstr("general.alignment") + struct.pack("<II", 4, align)
        n_kv += 1
    if tokens is not None:
        kv += gstr("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, len(tokens))
        kv += b"".join(gstr(t) for t in tokens)
        n_kv += 1
    ti = gstr("token_embd.weight") + struct.pack("<I", len(dims))
    ti += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ggml_type, 0)
    head = b"GGUF" + struct.pack("<IQQ", version, 1, n_kv) + kv + ti
    head += b"\0" * (-len(head) % align)
    return head + data

save("gguf", "f32_tokens_v3.gguf", gguf(3, 0, [8, 4], x.tobytes(), words))
save("gguf", "f16_v2.gguf", gguf(2, 1, [8, 4], x.astype(np.float16).tobytes(), words))
save("gguf", "bf16_align64.gguf", gguf(3, 30, [8, 4], bf16.tobytes(), None, 64))
# Q1_0: 2 rows x 128 values = one block of 18 bytes per row (fp16 scale, 16 bytes of signs).
q1 = b""
for r in range(2):
    q1 += np.float16(0.5 + r).tobytes() + bytes((0x5A + 17 * i + r) & 0xFF for i in range(16))
save("gguf", "q1_0.gguf", gguf(3, 41, [128, 2], q1, ["a", "b"]))
kv_types = gstr("t.u8") + struct.pack("<IB", 0, 7) + gstr("t.f64") + struct.pack("<Id", 12, 1.5)
kv_types += gstr("t.arr") + struct.pack("<IIQ", 9, 4, 2) + struct.pack("<II", 1, 2)
kv_types += gstr("t.bool") + struct.pack("<IB", 7, 1)
save("gguf", "kv_types.gguf", gguf(3, 0, [8, 4], x.tobytes(), None, 32, kv_types, 4))

with open("%s/fvecs/4x8.fvecs" % out, "wb") as f:
    for row in x:
        f.write(struct.pack("<i", 8) + row.tobytes())
save("fvecs", "1x1.fvecs", struct.pack("<if", 1, 0.25))

w2v = b"4 8\n" + b"".join(w.encode() + b" " + r.tobytes() + b"\n" for w, r in zip(words, x))
save("word2vec", "original_newlines.bin", w2v)
w2v = b"4 8\n" + b"".join(w.encode() + b" " + r.tobytes() for w, r in zip(words, x))
save("word2vec", "gensim_no_newlines.bin", w2v)
PY

# ---- detection: one file of each reader's kind (the fuzzed path has no extension) ----
mkdir -p "$corpus/detect"
for f in npy/f32_4x8.npy safetensors/f32.safetensors gguf/f32_tokens_v3.gguf \
  word2vec/original_newlines.bin word2vec_text/demo4x8.vec glove/demo4x8.txt fvecs/4x8.fvecs; do
  cp "$corpus/$f" "$corpus/detect/"
done

# ---- numbers, floats, requests ----
mkdir -p "$corpus"/{parse_float,float,api}
printf '1.5 -0 0.1 1e-45 3.4028235e38 3.4028236e38 1e39 nan -Infinity inf +7 .5 5. 1e 1e+ 0x1p3' \
  >"$corpus/parse_float/mixed.txt"
printf '123456789012345678901234567890 0.000000000000000000000000000000000000000000001401298' \
  >"$corpus/parse_float/long.txt"
printf '1.00000005960464477539062 16777217 9007199254740993e-22 7.038531e-26' \
  >"$corpus/parse_float/midpoints.txt"
head -n 1 demo.txt | cut -d' ' -f2- >"$corpus/parse_float/demo_row.txt"
$py - "$corpus" <<'PY'
import struct, sys
out = sys.argv[1]
f = [0.0, -0.0, 1.0, 0.1, 1e-45, 1.17549435e-38, 3.4028235e38, float("nan"), float("inf"),
     -float("inf"), 16777216.0, 1e10, 123.456, 9.999999e-5, 1e-7, 0.3]
open(out + "/float/specials.bin", "wb").write(struct.pack("<%df" % len(f), *f))
d = [0.0, -0.0, 0.1, 1e-300, 5e-324, 1.7976931348623157e308, float("nan"), 2.0 ** 60]
open(out + "/float/doubles.bin", "wb").write(struct.pack("<%dd" % len(d), *d))
bits = [0x00000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0x3F800001, 0x4B7FFFFF, 0x80000001]
open(out + "/float/bits.bin", "wb").write(struct.pack("<%dI" % len(bits), *bits))
PY

req() { # name method target [headers...] -- body
  local name=$1 method=$2 target=$3
  shift 3
  {
    printf '%s %s\n' "$method" "$target"
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
      printf '%s\n' "$1"
      shift
    done
    printf '\n'
    if [ $# -gt 0 ]; then
      shift
      printf '%s' "$*"
    fi
  } >"$corpus/api/$name.txt"
}
json='Content-Type: application/json'
req healthz GET /healthz
req readyz GET /readyz
req metrics GET /metrics
req openapi GET /openapi.yaml
req tables GET /v1/tables
req table GET /v1/tables/t
req row GET /v1/tables/t/rows/3
req row_b64_f16 GET '/v1/tables/q/rows/1?encoding=base64&dtype=f16'
req key_escaped GET /v1/tables/t/keys/a%2Fb
req key_utf8 GET /v1/tables/t/keys/caf%C3%A9
req key_missing GET /v1/tables/f/keys/apple
req reload POST /v1/admin/reload
req unknown_route GET /v1/tables/t/nothing/here
req gather_ids POST /v1/tables/t/gather "$json" -- '{"ids": [0, 1, 39, 40]}'
req gather_keys_mean POST /v1/tables/t/gather "$json" -- \
  '{"keys": ["apple", "nope", "cherry"], "pool": "mean", "weights": [1, 2, 0.5]}'
req gather_binary POST /v1/tables/t/gather "$json" 'Accept: application/octet-stream' -- \
  '{"ids": [2, 5], "encoding": "base64", "dtype": "f16"}'
req gather_error POST /v1/tables/f/gather "$json" -- '{"ids": [1, 99], "on_missing": "error"}'
req gather_pool_f16_overflow POST /v1/tables/t/gather "$json" -- \
  '{"ids": [1], "pool": "sum", "weights": [1e30], "encoding": "base64", "dtype": "f16"}'
req search_key POST /v1/tables/t/search "$json" -- '{"key": "apple", "k": 5}'
req search_id_exact POST /v1/tables/f/search "$json" -- \
  '{"id": 2, "k": 3, "exact": true, "metric": "dot", "exclude_ids": [0, 1]}'
req search_vector POST /v1/tables/f/search "$json" -- '{"vector": [0.5, -1, 2e3], "k": 2}'
req search_vector_cos POST /v1/tables/t/search "$json" -- \
  '{"vector": [0.5, -1, 2, 0, 1e-3, 7, -2.5, 1], "k": 4, "metric": "cos"}'
req search_vector_dot_exact POST /v1/tables/t/search "$json" -- \
  '{"vector": [1, 1, 1, 1, -1, -1, -1, -1], "k": 3, "metric": "dot", "exact": true}'
req search_dot_overflow POST /v1/tables/f/search "$json" -- \
  '{"vector": [3e38, 3e38, -3e38], "k": 3, "metric": "dot"}'
req search_b64 POST /v1/tables/f/search "$json" -- \
  '{"vector": "AAAAPwAAgL8AAPpE", "encoding": "base64", "include_vectors": true}'
req search_batch POST /v1/tables/q/search "$json" -- \
  '{"ids": [0, 1], "oversample": 8, "k": 2}'
req search_vectors POST /v1/tables/f/search "$json" -- \
  '{"vectors": [[1, 2, 3], [0, 0, 1]], "k": 4}'
req search_bad_json POST /v1/tables/t/search "$json" -- '{"key": "apple", "k": }'
req search_big_int POST /v1/tables/t/search "$json" -- '{"id": 123456789012345678901234567890}'
req search_text_type POST /v1/tables/t/search 'Content-Type: text/plain' -- '{"key": "apple"}'
echo "corpus written to $corpus"
