/*
 * store.c - opening, validating and reading an embd store (.emb).
 *
 * emb_store_open maps the file read-only and validates the header and the section table
 * against the file size; it reads the header, the table and the 16-byte key-index header and
 * nothing else, so open time does not depend on the number of rows. Every check has its own
 * message naming what failed and where (SQLite's CORRUPT_BKPT habit): a damaged file is
 * diagnosed, never trusted. emb_store_verify then reads everything: checksums, key offsets, the
 * key index, padding, norms, and that the interleaved q1 copy equals the q1 rows.
 *
 * Invariants after a successful open: every section pointer lies inside the mapping with the
 * length its kind requires; the mapping is never written; the row sections' sizes equal
 * rows x stride exactly. Key offsets are NOT trusted (that would mean reading them all): every
 * key access checks them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "emb.h"
#include "emb_kernels.h"
#include "store_internal.h"

const char *emb_section_name(uint32_t kind)
{
    switch (kind) {
    case EMB_SEC_META: return "meta";
    case EMB_SEC_NORMS: return "norms";
    case EMB_SEC_ROWS_F32: return "rows_f32";
    case EMB_SEC_ROWS_F16: return "rows_f16";
    case EMB_SEC_ROWS_Q1: return "rows_q1";
    case EMB_SEC_KEYS_OFFS: return "keys_offs";
    case EMB_SEC_KEYS_BLOB: return "keys_blob";
    case EMB_SEC_KEYS_HASH: return "keys_hash";
    case EMB_SEC_ROWS_Q1I: return "rows_q1i";
    default: return "unknown";
    }
}

size_t emb__stride(uint32_t codec, uint32_t dim)
{
    switch (codec) {
    case EMB_CODEC_F32: return ((size_t)dim * 4 + EMB_ALIGN - 1) / EMB_ALIGN * EMB_ALIGN;
    case EMB_CODEC_F16: return ((size_t)dim * 2 + EMB_ALIGN - 1) / EMB_ALIGN * EMB_ALIGN;
    case EMB_CODEC_Q1: return (size_t)emb_q1_blocks(dim) * EMB_Q1_BLOCK;
    default: return 0;
    }
}

uint32_t emb__header_crc(const void *buf, size_t header_size)
{
    static const uint8_t zero[4];
    uint32_t crc = emb_crc32c(0, buf, offsetof(emb_header, header_crc));
    crc = emb_crc32c(crc, zero, 4);
    return emb_crc32c(crc, (const uint8_t *)buf + offsetof(emb_header, reserved),
                      header_size - offsetof(emb_header, reserved));
}

/* a * b into *out unless it overflows. */
static int mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

static int corrupt(emb_error *err, const char *fmt, const char *what, uint64_t a, uint64_t b)
{
    char line[400];
    snprintf(line, sizeof line, fmt, what, (unsigned long long)a, (unsigned long long)b);
    return emb_error_set(err, EMB_ECORRUPT, "%s", line);
}

/* Required payload length of a section of kind, or UINT64_MAX when any length up to a cap is
 * allowed (meta, key blob), or 0 with *bad set when the size overflows. */
static int expected_length(const emb_store *s, uint32_t kind, uint64_t *want, emb_error *err)
{
    uint64_t n = 0;
    int ok = 1;
    switch (kind) {
    case EMB_SEC_NORMS: ok = mul_ok(s->rows, 4, &n); break;
    case EMB_SEC_ROWS_F32: ok = mul_ok(s->rows, emb__stride(EMB_CODEC_F32, s->dim), &n); break;
    case EMB_SEC_ROWS_F16: ok = mul_ok(s->rows, emb__stride(EMB_CODEC_F16, s->dim), &n); break;
    case EMB_SEC_ROWS_Q1: ok = mul_ok(s->rows, emb__stride(EMB_CODEC_Q1, s->dim), &n); break;
    case EMB_SEC_KEYS_OFFS: ok = s->rows < UINT64_MAX && mul_ok(s->rows + 1, 8, &n); break;
    case EMB_SEC_ROWS_Q1I:
        ok = mul_ok(s->rows / EMB_Q1I_ROWS + (s->rows % EMB_Q1I_ROWS != 0),
                    (uint64_t)emb_q1_blocks(s->dim) * EMB_Q1I_TILE, &n);
        break;
    default: n = UINT64_MAX; break;
    }
    if (!ok)
        return emb_error_set(err, EMB_ECORRUPT,
                             "section %s: rows (%llu) x row size overflows 64 bits",
                             emb_section_name(kind), (unsigned long long)s->rows);
    *want = n;
    return 0;
}

int emb_store_parse(emb_store *s, const void *buf, size_t len, emb_error *err)
{
    const uint8_t *base = buf;
    emb_header h;
    memset(s, 0, sizeof *s);

    if (len < sizeof h)
        return emb_error_set(err, EMB_ETRUNCATED,
                             "header: file is %zu bytes, smaller than the 64-byte header", len);
    memcpy(&h, base, sizeof h);
    if (memcmp(h.magic, EMB_MAGIC, 8) != 0)
        return emb_error_set(err, EMB_ECORRUPT,
                             "header: bad magic at offset 0 (not an embd store)");
    if (h.bom == __builtin_bswap32(EMB_BOM))
        return emb_error_set(err, EMB_EBYTEORDER,
                             "header: byte-order mark at offset 8 is big-endian; embd stores are "
                             "little-endian");
    if (h.bom != EMB_BOM)
        return emb_error_set(err, EMB_ECORRUPT, "header: bad byte-order mark 0x%08x at offset 8",
                             h.bom);
    if (h.version_major != EMB_VERSION_MAJOR)
        return emb_error_set(err, EMB_EVERSION,
                             "header: format version %u.%u at offset 12; this embd reads %u.x",
                             h.version_major, h.version_minor, EMB_VERSION_MAJOR);
    if (h.section_count > EMB_MAX_SECTIONS)
        return emb_error_set(err, EMB_ECORRUPT, "header: section_count %u exceeds %u",
                             h.section_count, EMB_MAX_SECTIONS);
    if (h.header_size != sizeof h + (uint64_t)h.section_count * sizeof(emb_section))
        return emb_error_set(err, EMB_ECORRUPT,
                             "header: header_size %u does not match %u sections (want %zu)",
                             h.header_size, h.section_count,
                             sizeof h + (size_t)h.section_count * sizeof(emb_section));
    if (h.file_size > len)
        return emb_error_set(err, EMB_ETRUNCATED,
                             "header: file_size says %llu bytes but the file has %zu (truncated)",
                             (unsigned long long)h.file_size, len);
    if (h.file_size < len)
        return emb_error_set(err, EMB_ECORRUPT,
                             "header: file_size says %llu bytes but the file has %zu (trailing "
                             "bytes)",
                             (unsigned long long)h.file_size, len);
    if (h.header_size > len)
        return emb_error_set(err, EMB_ETRUNCATED,
                             "header: section table ends at %u, past the end of the file (%zu)",
                             h.header_size, len);
    uint32_t crc = emb__header_crc(base, h.header_size);
    if (crc != h.header_crc)
        return emb_error_set(err, EMB_ECHECKSUM,
                             "header: CRC-32C 0x%08x over bytes [0, %u) does not match stored "
                             "0x%08x",
                             crc, h.header_size, h.header_crc);
    if (h.dim == 0 || h.dim > EMB_MAX_DIM)
        return emb_error_set(err, EMB_ECORRUPT, "header: dim %u outside 1..%u", h.dim, EMB_MAX_DIM);
    if (h.rows == 0)
        return emb_error_set(err, EMB_ECORRUPT, "header: rows is 0");
    if (h.codecs == 0 || (h.codecs & ~(uint32_t)(EMB_CODEC_F32 | EMB_CODEC_F16 | EMB_CODEC_Q1)))
        return emb_error_set(err, EMB_ECORRUPT, "header: codecs 0x%x is empty or unknown",
                             h.codecs);
    if ((h.codecs & EMB_CODEC_F32) && (h.codecs & EMB_CODEC_F16))
        return emb_error_set(err, EMB_ECORRUPT,
                             "header: codecs 0x%x holds both f32 and f16 (not a valid store)",
                             h.codecs);
    if (h.metric > EMB_METRIC_L2)
        return emb_error_set(err, EMB_ECORRUPT, "header: metric %u unknown", h.metric);
    if (h.flags & ~(uint32_t)(EMB_FLAG_KEYS | EMB_FLAG_NORMALIZED))
        return emb_error_set(err, EMB_ECORRUPT, "header: unknown flags 0x%x", h.flags);
    if ((h.flags & EMB_FLAG_KEYS) && h.rows >= UINT32_MAX)
        return emb_error_set(err, EMB_ECORRUPT,
                             "header: %llu rows with keys; a keyed store holds < 2^32 - 1 rows",
                             (unsigned long long)h.rows);
    if (h.reserved != 0)
        return emb_error_set(err, EMB_ECORRUPT, "header: reserved field at offset 60 is not 0");

    s->header = (const emb_header *)base;
    s->sections = (const emb_section *)(base + sizeof h);
    s->rows = h.rows;
    s->dim = h.dim;
    s->codecs = h.codecs;
    s->metric = (emb_metric)h.metric;
    s->flags = h.flags;
    s->q1_blocks = emb_q1_blocks(h.dim);
    s->checksum = h.header_crc;

    const emb_section *by_kind[EMB_SEC_KIND_MAX + 1] = {0};
    for (uint32_t i = 0; i < h.section_count; i++) {
        emb_section e;
        memcpy(&e, base + sizeof h + (size_t)i * sizeof e, sizeof e);
        const char *name = emb_section_name(e.kind);
        if (e.kind == 0 || e.kind > EMB_SEC_KIND_MAX)
            return emb_error_set(err, EMB_ECORRUPT, "section table entry %u: unknown kind %u", i,
                                 e.kind);
        if (by_kind[e.kind])
            return emb_error_set(err, EMB_ECORRUPT, "section %s appears twice", name);
        if (e.flags != 0 || e.reserved != 0)
            return emb_error_set(err, EMB_ECORRUPT, "section %s: reserved fields are not 0", name);
        if (e.offset % EMB_ALIGN != 0)
            return corrupt(err, "section %s: offset %llu is not a multiple of %llu", name, e.offset,
                           EMB_ALIGN);
        if (e.offset < h.header_size)
            return corrupt(err, "section %s: offset %llu overlaps the header (%llu bytes)", name,
                           e.offset, h.header_size);
        if (e.offset > len)
            return emb_error_set(err, EMB_ECORRUPT,
                                 "section %s: offset %llu is past the end of the file (%zu)", name,
                                 (unsigned long long)e.offset, len);
        if (e.length > len - e.offset)
            return emb_error_set(
                err, EMB_ECORRUPT, "section %s: [%llu, +%llu) runs past the end of the file (%zu)",
                name, (unsigned long long)e.offset, (unsigned long long)e.length, len);
        uint64_t want = 0;
        int rc = expected_length(s, e.kind, &want, err);
        if (rc)
            return rc;
        if (want != UINT64_MAX && e.length != want)
            return corrupt(err, "section %s: length %llu, expected %llu from rows and dim", name,
                           e.length, want);
        by_kind[e.kind] = (const emb_section *)(base + sizeof h + (size_t)i * sizeof e);
    }
    /* No two sections overlap: compare every pair (at most 9 sections). */
    for (uint32_t a = 1; a <= EMB_SEC_KIND_MAX; a++)
        for (uint32_t b = a + 1; b <= EMB_SEC_KIND_MAX; b++) {
            const emb_section *x = by_kind[a], *y = by_kind[b];
            if (x && y && x->length && y->length && x->offset < y->offset + y->length &&
                y->offset < x->offset + x->length)
                return emb_error_set(err, EMB_ECORRUPT, "sections %s and %s overlap",
                                     emb_section_name(a), emb_section_name(b));
        }

    static const struct {
        uint32_t codec, kind;
    } codec_sections[] = {{EMB_CODEC_F32, EMB_SEC_ROWS_F32},
                          {EMB_CODEC_F16, EMB_SEC_ROWS_F16},
                          {EMB_CODEC_Q1, EMB_SEC_ROWS_Q1}};
    for (size_t i = 0; i < 3; i++) {
        int has = (h.codecs & codec_sections[i].codec) != 0;
        if (has != (by_kind[codec_sections[i].kind] != NULL))
            return emb_error_set(err, EMB_ECORRUPT, "section %s is %s but codecs says %s",
                                 emb_section_name(codec_sections[i].kind),
                                 has ? "missing" : "present", has ? "present" : "absent");
    }
    if (by_kind[EMB_SEC_ROWS_Q1I] && !by_kind[EMB_SEC_ROWS_Q1])
        return emb_error_set(err, EMB_ECORRUPT, "section rows_q1i is present without rows_q1");
    if (!by_kind[EMB_SEC_NORMS])
        return emb_error_set(err, EMB_ECORRUPT, "section norms is missing");
    int keys = (h.flags & EMB_FLAG_KEYS) != 0;
    for (uint32_t k = EMB_SEC_KEYS_OFFS; k <= EMB_SEC_KEYS_HASH; k++)
        if (keys != (by_kind[k] != NULL))
            return emb_error_set(err, EMB_ECORRUPT, "section %s is %s but the keys flag is %s",
                                 emb_section_name(k), keys ? "missing" : "present",
                                 keys ? "set" : "clear");
    if (by_kind[EMB_SEC_META] && by_kind[EMB_SEC_META]->length > EMB_MAX_META)
        return emb_error_set(err, EMB_ECORRUPT, "section meta: %llu bytes exceeds %u",
                             (unsigned long long)by_kind[EMB_SEC_META]->length, EMB_MAX_META);

#define SEC_PTR(kind) (by_kind[kind] ? base + by_kind[kind]->offset : NULL)
    s->rows_f32 = SEC_PTR(EMB_SEC_ROWS_F32);
    s->rows_f16 = SEC_PTR(EMB_SEC_ROWS_F16);
    s->rows_q1 = SEC_PTR(EMB_SEC_ROWS_Q1);
    s->rows_q1i = SEC_PTR(EMB_SEC_ROWS_Q1I);
    s->stride_f32 = s->rows_f32 ? emb__stride(EMB_CODEC_F32, s->dim) : 0;
    s->stride_f16 = s->rows_f16 ? emb__stride(EMB_CODEC_F16, s->dim) : 0;
    s->stride_q1 = s->rows_q1 ? emb__stride(EMB_CODEC_Q1, s->dim) : 0;
    s->norms = (const float *)SEC_PTR(EMB_SEC_NORMS);
    if (by_kind[EMB_SEC_META]) {
        s->meta = (const char *)SEC_PTR(EMB_SEC_META);
        s->meta_len = by_kind[EMB_SEC_META]->length;
    }
    if (keys) {
        const emb_section *hs = by_kind[EMB_SEC_KEYS_HASH];
        emb_hash_header hh;
        if (hs->length < sizeof hh)
            return emb_error_set(err, EMB_ECORRUPT,
                                 "section keys_hash: %llu bytes, shorter than its 16-byte header",
                                 (unsigned long long)hs->length);
        memcpy(&hh, base + hs->offset, sizeof hh);
        uint64_t slot_bytes;
        if (hh.capacity < s->rows || hh.capacity > (UINT64_C(1) << 40) ||
            (hh.capacity & (hh.capacity - 1)) != 0)
            return corrupt(err, "section %s: capacity %llu is not a power of two >= rows (%llu)",
                           "keys_hash", hh.capacity, s->rows);
        if (!mul_ok(hh.capacity, 8, &slot_bytes) || hs->length - sizeof hh != slot_bytes)
            return corrupt(err, "section %s: length %llu does not hold %llu slots", "keys_hash",
                           hs->length, hh.capacity);
        if (hh.max_probe == 0 || hh.max_probe > hh.capacity)
            return corrupt(err, "section %s: max_probe %llu outside 1..capacity (%llu)",
                           "keys_hash", hh.max_probe, hh.capacity);
        s->key_offs = (const uint64_t *)SEC_PTR(EMB_SEC_KEYS_OFFS);
        s->key_blob = SEC_PTR(EMB_SEC_KEYS_BLOB);
        s->key_blob_len = by_kind[EMB_SEC_KEYS_BLOB]->length;
        s->key_hash = (const emb_hash_header *)(base + hs->offset);
        s->key_slots = (const uint64_t *)(base + hs->offset + sizeof hh);
    }
#undef SEC_PTR
    return 0;
}

/* The mappings of open stores, so that a SIGBUS handler can name the store whose pages
 * vanished (a file truncated in place). A fixed array because the handler may neither lock nor
 * allocate: a slot is claimed with `used`, filled, then published by a release store of `base`;
 * readers acquire `base` before reading `len` and `path`. Stores beyond MAP_SLOTS open at once
 * are served all the same, only not named by emb_store_mapping_at. */
enum { MAP_SLOTS = 64 };
static struct map_slot {
    atomic_int used;
    _Atomic(const char *) base;
    size_t len;
    char path[240];
} map_slots[MAP_SLOTS];

static void map_register(const void *base, size_t len, const char *path)
{
    for (int i = 0; i < MAP_SLOTS; i++) {
        int free_slot = 0;
        if (atomic_compare_exchange_strong(&map_slots[i].used, &free_slot, 1)) {
            map_slots[i].len = len;
            snprintf(map_slots[i].path, sizeof map_slots[i].path, "%s", path);
            atomic_store_explicit(&map_slots[i].base, base, memory_order_release);
            return;
        }
    }
}

static void map_unregister(const void *base)
{
    for (int i = 0; i < MAP_SLOTS; i++)
        if (atomic_load_explicit(&map_slots[i].base, memory_order_acquire) == base) {
            atomic_store(&map_slots[i].base, NULL);
            atomic_store(&map_slots[i].used, 0);
            return;
        }
}

const char *emb_store_mapping_at(const void *addr, uint64_t *offset)
{
    for (int i = 0; i < MAP_SLOTS; i++) {
        const char *b = atomic_load_explicit(&map_slots[i].base, memory_order_acquire);
        if (b && (const char *)addr >= b && (size_t)((const char *)addr - b) < map_slots[i].len) {
            *offset = (uint64_t)((const char *)addr - b);
            return map_slots[i].path;
        }
    }
    return NULL;
}

int emb_store_open(emb_store **out, const char *path, emb_error *err)
{
    int rc;
    emb_store *s = calloc(1, sizeof *s);
    if (!s)
        return emb_error_set(err, EMB_ENOMEM, "out of memory opening %s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = emb_error_set(err, -errno, "%s: %s", path, strerror(errno));
        goto fail_open;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = emb_error_set(err, -errno, "%s: fstat: %s", path, strerror(errno));
        goto fail_stat;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = emb_error_set(err, EMB_EINVAL, "%s: not a regular file", path);
        goto fail_stat;
    }
    if (st.st_size < (off_t)sizeof(emb_header)) {
        rc = emb_error_set(err, EMB_ETRUNCATED,
                           "%s: header: file is %lld bytes, smaller than the 64-byte header", path,
                           (long long)st.st_size);
        goto fail_stat;
    }
    size_t len = (size_t)st.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        rc = emb_error_set(err, -errno, "%s: mmap: %s", path, strerror(errno));
        goto fail_stat;
    }
    rc = emb_store_parse(s, map, len, err);
    if (rc) {
        emb_error_prefix(err, path);
        goto fail_parse;
    }
    s->_map = map;
    s->_map_len = len;
    close(fd);
    map_register(map, len, path);
    *out = s;
    return 0;

fail_parse:
    munmap(map, len);
fail_stat:
    close(fd);
fail_open:
    free(s);
    return rc;
}

void emb_store_close(emb_store *s)
{
    if (!s)
        return;
    if (s->_map) {
        map_unregister(s->_map);
        munmap(s->_map, s->_map_len);
    }
    free(s);
}

uint32_t emb_store_primary_codec(const emb_store *s)
{
    if (s->rows_f32)
        return EMB_CODEC_F32;
    if (s->rows_f16)
        return EMB_CODEC_F16;
    return EMB_CODEC_Q1;
}

void emb__decode_row(const emb_store *s, uint32_t codec, uint64_t id, float *out)
{
    switch (codec) {
    case EMB_CODEC_F32: memcpy(out, s->rows_f32 + id * s->stride_f32, (size_t)s->dim * 4); break;
    case EMB_CODEC_F16:
        emb_kernels_get()->f16_to_f32((const uint16_t *)(s->rows_f16 + id * s->stride_f16), out,
                                      s->dim);
        break;
    default: emb_q1_decode(s->rows_q1 + id * s->stride_q1, s->dim, out); break;
    }
}

int emb_store_row(const emb_store *s, uint64_t id, float *out)
{
    if (id >= s->rows)
        return EMB_ERANGE;
    emb__decode_row(s, emb_store_primary_codec(s), id, out);
    return 0;
}

int emb_store_key(const emb_store *s, uint64_t id, const char **key, size_t *len)
{
    if (!s->key_offs)
        return EMB_ENOTFOUND;
    if (id >= s->rows)
        return EMB_ERANGE;
    uint64_t a = s->key_offs[id], b = s->key_offs[id + 1];
    if (a > b || b > s->key_blob_len || b - a > EMB_MAX_KEY)
        return EMB_ECORRUPT;
    *key = (const char *)s->key_blob + a;
    *len = (size_t)(b - a);
    return 0;
}

uint64_t emb_key_hash(const void *key, size_t len, uint32_t seed)
{
    /* 64-bit multiply-xorshift over 8-byte words, finished with MurmurHash3's fmix64. Keys come
     * from the table's owner, not from clients, so flooding resistance is not needed; speed and
     * a stable definition (it is part of the file format) are. */
    const uint8_t *p = key;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ seed ^ ((uint64_t)len * 0xC2B2AE3D27D4EB4Full);
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ (v * 0x87C37B91114253D5ull)) * 0x4CF5AD432745937Full;
        h ^= h >> 29;
        p += 8;
        len -= 8;
    }
    uint64_t t = 0;
    for (size_t i = 0; i < len; i++)
        t |= (uint64_t)p[i] << (8 * i);
    h = (h ^ (t * 0x87C37B91114253D5ull)) * 0x4CF5AD432745937Full;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 33;
    return h;
}

int emb_store_find(const emb_store *s, const char *key, size_t len, uint64_t *id)
{
    if (!s->key_slots)
        return EMB_ENOTFOUND;
    uint64_t h = emb_key_hash(key, len, s->key_hash->seed);
    uint64_t mask = s->key_hash->capacity - 1;
    uint32_t fp = (uint32_t)(h >> 32);
    uint64_t i = h & mask;
    for (uint32_t probe = 0; probe < s->key_hash->max_probe; probe++, i = (i + 1) & mask) {
        uint64_t slot = s->key_slots[i];
        if (slot == 0)
            return EMB_ENOTFOUND;
        if ((uint32_t)(slot >> 32) != fp)
            continue;
        uint64_t row = (slot & 0xFFFFFFFFu) - 1;
        const char *k;
        size_t klen;
        int rc = emb_store_key(s, row, &k, &klen);
        if (rc == EMB_ERANGE || (rc == 0 && row == UINT64_MAX))
            return EMB_ECORRUPT;
        if (rc)
            return rc;
        if (klen == len && memcmp(k, key, len) == 0) {
            *id = row;
            return 0;
        }
    }
    return EMB_ENOTFOUND;
}

static int verify_keys(const emb_store *s, emb_error *err)
{
    if (s->key_offs[0] != 0)
        return emb_error_set(err, EMB_ECORRUPT, "keys_offs: first offset is %llu, not 0",
                             (unsigned long long)s->key_offs[0]);
    if (s->key_offs[s->rows] != s->key_blob_len)
        return emb_error_set(
            err, EMB_ECORRUPT, "keys_offs: last offset %llu does not match keys_blob length %llu",
            (unsigned long long)s->key_offs[s->rows], (unsigned long long)s->key_blob_len);
    for (uint64_t i = 0; i < s->rows; i++) {
        const char *k;
        size_t len;
        if (emb_store_key(s, i, &k, &len) != 0)
            return emb_error_set(err, EMB_ECORRUPT,
                                 "keys_offs: offsets of row %llu ([%llu, %llu)) are out of order, "
                                 "past the blob or longer than %u",
                                 (unsigned long long)i, (unsigned long long)s->key_offs[i],
                                 (unsigned long long)s->key_offs[i + 1], EMB_MAX_KEY);
    }
    uint64_t used = 0;
    for (uint64_t i = 0; i < s->key_hash->capacity; i++) {
        uint64_t slot = s->key_slots[i];
        if (!slot)
            continue;
        used++;
        if ((slot & 0xFFFFFFFFu) > s->rows)
            return emb_error_set(err, EMB_ECORRUPT, "keys_hash: slot %llu names row %llu of %llu",
                                 (unsigned long long)i,
                                 (unsigned long long)((slot & 0xFFFFFFFFu) - 1),
                                 (unsigned long long)s->rows);
    }
    if (used > s->rows)
        return emb_error_set(err, EMB_ECORRUPT, "keys_hash: %llu slots used for %llu rows",
                             (unsigned long long)used, (unsigned long long)s->rows);
    /* Every key must be found, at its own row or at an earlier row with the same key (the
     * first of duplicate keys wins). */
    for (uint64_t i = 0; i < s->rows; i++) {
        const char *k = NULL, *k2;
        size_t len = 0, len2;
        uint64_t id;
        emb_store_key(s, i, &k, &len); /* offsets were checked above: cannot fail */
        int rc = emb_store_find(s, k, len, &id);
        if (rc != 0 || id > i || emb_store_key(s, id, &k2, &len2) != 0 || len2 != len ||
            memcmp(k, k2, len) != 0)
            return emb_error_set(err, EMB_ECORRUPT,
                                 "keys_hash: the key of row %llu is not found by the index",
                                 (unsigned long long)i);
    }
    return 0;
}

/* Checks that the padding after dim values in each padded row is zero, that q1 scales are
 * finite, and that the stored norms match the primary rows (so no value is NaN or Inf). */
static int verify_rows(const emb_store *s, emb_error *err)
{
    const size_t used[2] = {(size_t)s->dim * 4, (size_t)s->dim * 2};
    const uint8_t *sec[2] = {s->rows_f32, s->rows_f16};
    const size_t stride[2] = {s->stride_f32, s->stride_f16};
    const char *name[2] = {"rows_f32", "rows_f16"};
    for (int c = 0; c < 2; c++) {
        if (!sec[c] || used[c] == stride[c])
            continue;
        for (uint64_t r = 0; r < s->rows; r++)
            for (size_t b = used[c]; b < stride[c]; b++)
                if (sec[c][r * stride[c] + b] != 0)
                    return emb_error_set(err, EMB_ECORRUPT,
                                         "%s: row %llu has non-zero padding at byte %zu", name[c],
                                         (unsigned long long)r, b);
    }
    if (s->rows_q1) {
        /* Every scale finite; bits past dim in the last block zero. */
        const uint32_t tail = s->dim % EMB_Q1_GROUP;
        for (uint64_t r = 0; r < s->rows; r++) {
            const uint8_t *row = s->rows_q1 + r * s->stride_q1;
            for (uint32_t b = 0; b < s->q1_blocks; b++) {
                uint16_t d;
                memcpy(&d, row + (size_t)b * EMB_Q1_BLOCK, 2);
                if (!isfinite(emb_f16_to_f32(d)))
                    return emb_error_set(err, EMB_ECORRUPT,
                                         "rows_q1: row %llu block %u has a non-finite scale",
                                         (unsigned long long)r, b);
            }
            const uint8_t *bits = row + (size_t)(s->q1_blocks - 1) * EMB_Q1_BLOCK + 2;
            for (uint32_t j = tail ? tail : EMB_Q1_GROUP; j < EMB_Q1_GROUP; j++)
                if (bits[j / 8] & (1u << (j % 8)))
                    return emb_error_set(err, EMB_ECORRUPT,
                                         "rows_q1: row %llu has a bit set past dim (value %u of "
                                         "the last block)",
                                         (unsigned long long)r, j);
        }
    }
    if (s->rows_q1i) {
        /* The interleaved copy holds the q1 rows, group by group, and zero past the last. */
        const size_t tiles = (size_t)s->q1_blocks * EMB_Q1I_TILE;
        uint8_t *want = malloc(tiles);
        if (!want)
            return emb_error_set(err, EMB_ENOMEM, "out of memory");
        for (uint64_t g = 0; g * EMB_Q1I_ROWS < s->rows; g++) {
            const uint64_t r0 = g * EMB_Q1I_ROWS;
            const size_t n = s->rows - r0 < EMB_Q1I_ROWS ? (size_t)(s->rows - r0) : EMB_Q1I_ROWS;
            emb_q1_interleave(s->rows_q1 + r0 * s->stride_q1, s->stride_q1, n, s->dim, want);
            if (memcmp(want, s->rows_q1i + g * tiles, tiles) != 0) {
                free(want);
                return emb_error_set(err, EMB_ECORRUPT,
                                     "rows_q1i: group %llu (rows %llu..) differs from rows_q1",
                                     (unsigned long long)g, (unsigned long long)r0);
            }
        }
        free(want);
    }
    float *row = malloc((size_t)s->dim * sizeof *row);
    if (!row)
        return emb_error_set(err, EMB_ENOMEM, "out of memory");
    uint32_t codec = emb_store_primary_codec(s);
    int rc = 0;
    for (uint64_t r = 0; r < s->rows && !rc; r++) {
        emb__decode_row(s, codec, r, row);
        double sum = 0;
        for (uint32_t j = 0; j < s->dim; j++)
            sum += (double)row[j] * row[j];
        double want = sqrt(sum), got = s->norms[r];
        if (!isfinite(got) || !isfinite(want) || fabs(got - want) > 1e-4 * want + 1e-6)
            rc = emb_error_set(err, EMB_ECORRUPT,
                               "norms: row %llu stores %g but its values give %g (or a value is "
                               "not finite)",
                               (unsigned long long)r, got, want);
    }
    free(row);
    return rc;
}

int emb_store_verify(const emb_store *s, emb_error *err)
{
    const uint8_t *base = (const uint8_t *)s->header;
    size_t len = (size_t)s->header->file_size;
    for (uint32_t i = 0; i < s->header->section_count; i++) {
        const emb_section *e = &s->sections[i];
        uint32_t crc = emb_crc32c(0, base + e->offset, (size_t)e->length);
        if (crc != e->crc)
            return emb_error_set(err, EMB_ECHECKSUM,
                                 "section %s: CRC-32C 0x%08x over [%llu, +%llu) does not match "
                                 "stored 0x%08x",
                                 emb_section_name(e->kind), crc, (unsigned long long)e->offset,
                                 (unsigned long long)e->length, e->crc);
    }
    /* Bytes no section covers (alignment gaps) must be zero. */
    for (size_t off = s->header->header_size; off < len;) {
        const emb_section *hit = NULL;
        size_t next = len;
        for (uint32_t i = 0; i < s->header->section_count; i++) {
            const emb_section *e = &s->sections[i];
            if (e->offset <= off && off < e->offset + e->length)
                hit = e;
            else if (e->offset > off && e->offset < next)
                next = (size_t)e->offset;
        }
        if (hit) {
            off = (size_t)(hit->offset + hit->length);
            continue;
        }
        for (size_t b = off; b < next; b++)
            if (base[b])
                return emb_error_set(err, EMB_ECORRUPT,
                                     "padding: byte %zu between sections is not 0", b);
        off = next;
    }
    int rc = verify_rows(s, err);
    if (rc)
        return rc;
    if (s->key_offs) {
        rc = verify_keys(s, err);
        if (rc)
            return rc;
    }
    return 0;
}
