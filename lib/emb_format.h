/*
 * emb_format.h - the on-disk layout of an embd store (.emb), defined here and nowhere else.
 *
 * A store is one immutable file: a fixed 64-byte header, a table of 32-byte section entries,
 * then the sections, each starting on a 64-byte boundary. Every integer is little-endian; the
 * byte-order mark lets a reader on a big-endian host (or a file written by a buggy big-endian
 * writer) fail with a precise error instead of reading garbage. ARCHITECTURE.md walks through
 * the layout byte by byte; keep the two in step.
 *
 * Rejected alternatives: a JSON or protobuf header (needs a parser at open, and open must cost
 * the same for 1 KB and 100 GB); one section per row codec with an inner header (the section
 * table already says offset, length and checksum, so a second level only adds checks).
 */
#ifndef EMB_FORMAT_H
#define EMB_FORMAT_H

#include <assert.h>
#include <stdint.h>

#define EMB_MAGIC         "EMBDSTOR"  /* 8 bytes, no terminator on disk */
#define EMB_BOM           0x01020304u /* written little-endian: 04 03 02 01 */
#define EMB_VERSION_MAJOR 1u          /* a reader refuses any other major */
#define EMB_VERSION_MINOR 1u          /* a reader accepts any minor of its major */
#define EMB_ALIGN         64u         /* every section offset, and f16/f32 row strides */
#define EMB_MAX_SECTIONS  64u         /* a header claiming more is corrupt */
#define EMB_MAX_DIM       65536u      /* widest row a store may hold */
#define EMB_MAX_META      (16u << 20) /* metadata text is at most 16 MiB */
#define EMB_MAX_KEY       4096u       /* a key is at most 4096 bytes */
#define EMB_Q1_GROUP      128u        /* values per Q1_0 block (GGML's QK1_0) */
#define EMB_Q1_BLOCK      18u         /* bytes per Q1_0 block: fp16 scale + 16 bytes of signs */
#define EMB_Q1I_ROWS      32u         /* rows per group of the interleaved q1 section */
#define EMB_Q1I_TILE      576u        /* bytes per (group, block) tile: 32 x EMB_Q1_BLOCK */

/* Codec bits in emb_header.codecs: which row sections the store holds. */
enum {
    EMB_CODEC_F32 = 1u << 0,
    EMB_CODEC_F16 = 1u << 1,
    EMB_CODEC_Q1 = 1u << 2,
};

/* Header flag bits. */
enum {
    EMB_FLAG_KEYS = 1u << 0,       /* KEYS_* sections present */
    EMB_FLAG_NORMALIZED = 1u << 1, /* rows were L2-normalised before encoding */
};

/* Section kinds; each kind appears at most once. */
enum {
    EMB_SEC_META = 1,      /* UTF-8 JSON text, not NUL-terminated */
    EMB_SEC_NORMS = 2,     /* float32[rows]: L2 norm of each row as served (see ARCHITECTURE.md) */
    EMB_SEC_ROWS_F32 = 3,  /* rows x stride_f32 bytes, zero padding after dim floats */
    EMB_SEC_ROWS_F16 = 4,  /* rows x stride_f16 bytes, zero padding after dim halves */
    EMB_SEC_ROWS_Q1 = 5,   /* rows x nblocks x 18 bytes, GGML block_q1_0, unpadded */
    EMB_SEC_KEYS_OFFS = 6, /* uint64[rows + 1]: key i is blob[offs[i], offs[i+1]) */
    EMB_SEC_KEYS_BLOB = 7, /* concatenated key bytes */
    EMB_SEC_KEYS_HASH = 8, /* emb_hash_header then uint64 slots[capacity] */
    /* Optional (minor 1): the q1 rows again, interleaved for scanning. Per group of 32 rows
     * (the last padded with zero rows), per block b: the low 64 sign bits of the 32 rows (8
     * bytes each), their high 64 bits, their 32 fp16 scales: EMB_Q1I_TILE bytes, so
     * ceil(rows / 32) x blocks x 576 bytes in all. Present only with ROWS_Q1, and equal to it. */
    EMB_SEC_ROWS_Q1I = 9,
    EMB_SEC_KIND_MAX = 9,
};

/* Fixed header at offset 0. */
typedef struct emb_header {
    char magic[8];          /*  0: "EMBDSTOR" */
    uint32_t bom;           /*  8: EMB_BOM */
    uint16_t version_major; /* 12 */
    uint16_t version_minor; /* 14 */
    uint32_t header_size;   /* 16: 64 + 32 * section_count, the bytes the header CRC covers */
    uint32_t section_count; /* 20 */
    uint64_t rows;          /* 24 */
    uint32_t dim;           /* 32 */
    uint32_t codecs;        /* 36: EMB_CODEC_* bits */
    uint32_t metric;        /* 40: default metric, emb_metric */
    uint32_t flags;         /* 44: EMB_FLAG_* bits */
    uint64_t file_size;     /* 48: exact size of the file in bytes */
    uint32_t header_crc;    /* 56: CRC-32C of bytes [0, header_size) with this field zero */
    uint32_t reserved;      /* 60: zero */
} emb_header;

/* One entry of the section table, which follows the header at offset 64. */
typedef struct emb_section {
    uint32_t kind;     /*  0: EMB_SEC_* */
    uint32_t flags;    /*  4: zero */
    uint64_t offset;   /*  8: multiple of EMB_ALIGN */
    uint64_t length;   /* 16: bytes of payload (padding to the next section is not counted) */
    uint32_t crc;      /* 24: CRC-32C of the payload */
    uint32_t reserved; /* 28: zero */
} emb_section;

/* Start of the KEYS_HASH section: open addressing with linear probing. A slot is
 * (fingerprint << 32) | (row + 1); 0 marks an empty slot. The fingerprint is the high 32 bits of
 * the key's 64-bit hash, the home slot its low bits masked by capacity - 1. */
typedef struct emb_hash_header {
    uint64_t capacity;  /* power of two, >= rows * 4 / 3 */
    uint32_t max_probe; /* longest probe sequence of any key, for the lookup bound */
    uint32_t seed;      /* hash seed */
} emb_hash_header;

static_assert(sizeof(emb_header) == 64, "emb_header is 64 bytes on disk");
static_assert(sizeof(emb_section) == 32, "emb_section is 32 bytes on disk");
static_assert(sizeof(emb_hash_header) == 16, "emb_hash_header is 16 bytes on disk");

#endif
