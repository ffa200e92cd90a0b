/*
 * kernels_q1q1_avx512.h - the AVX-512 q1 x q1 kernel body (XOR + popcount), included twice: by
 * kernels_avx512.c (AVX-512 BW: the population counts by a nibble table, vpshufb, and vpsadbw)
 * and by kernels_avx512vpopcnt.c (one vpopcntq). The includer defines Q1Q1_POPCNT(x) (the
 * population count of each 64-bit lane of x) and Q1Q1_NAME, the function's name. Counts are
 * integers, so the two builds return the same bits, those of the scalar twin.
 *
 * One block per row (n <= 128) on a packed table (stride 18, as every store has): sixteen rows
 * are 288 contiguous bytes = 144 16-bit words, row r's scale at word 9 r and its sign bits at
 * words 9 r + 1 .. 9 r + 8. Five loads hold them; one vpermt2w per four rows gathers their
 * bits into the four 128-bit lanes of a vector (rows 4 g .. 4 g + 3 lie within words
 * 32 g .. 32 g + 63 of the loads), XOR with the query block broadcast to every lane, the valid
 * bits masked when the block is partial, popcount per 64-bit half, and two unpacks, an add and
 * a vpermt2d put row r's count in lane r. Two more vpermt2w (over two more loads that start at
 * row 8) gather the 16 scales, widened by vcvtph2ps; then lane r is fmaf(d_r * qd, cnt - 2 pop,
 * +0), the scalar twin's operations. A last group of fewer than 16 rows loads with byte masks
 * (masked-off bytes are never read, so nothing past the rows is touched).
 *
 * The interleaved copy (Q1Q1I_NAME, dot_q1q1_ilv) needs none of that: a tile's four vectors of
 * low words and four of high words are XORed with the query's words broadcast and counted, an
 * add gives eight rows' counts per vector, two vpermt2d make them 32 lanes, and one load holds
 * the 32 scales. Per 32 rows and block: 9 loads, 2 shuffles (the row layout needs 12 per 32).
 * No software prefetch: the tiles are one sequential stream, and prefetching 8 KiB ahead as the
 * row kernel does measured 10% slower (loadtest/kernels/q1_rows.c, Zen 5).
 *
 * Any other shape (several blocks per row, or a stride that is not 18) goes sixteen rows at a
 * time block by block: popcnt of each row's two words (written as scalar code, which the
 * compiler partly vectorizes where VPOPCNTDQ is allowed), the 16 counts and the 16 scales (one
 * 32-bit gather, as q1 x q8 does) then widened and fused into lane r of the totals.
 */
#if !defined(Q1Q1_NAME) || !defined(Q1Q1I_NAME) || !defined(Q1Q1_POPCNT)
#error "define Q1Q1_NAME, Q1Q1I_NAME and Q1Q1_POPCNT before including kernels_q1q1_avx512.h"
#endif

#define Q1Q1_PF_BYTES   8192u
#define Q1Q1_CAT2(a, b) a##b
#define Q1Q1_CAT(a, b)  Q1Q1_CAT2(a, b)
#define Q1Q1I_GROUPS    Q1Q1_CAT(Q1Q1I_NAME, _groups)

/* Word k of lane l of the bits gather for rows 0..3: the row's words 9 l + 1 .. 9 l + 8 (plus
 * 4 g for rows 4 g ..: the g-th pair of loads starts 32 g words in, row 4 g at word 36 g). */
static const uint16_t q1q1_bits_idx[32] = {1,  2,  3,  4,  5,  6,  7,  8,  10, 11, 12,
                                           13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 24,
                                           25, 26, 28, 29, 30, 31, 32, 33, 34, 35};
/* Words 0..7 and 8..15: the scales of eight rows that start at the first load (word 9 r). */
static const uint16_t q1q1_scale_idx[32] = {0,  9,  18, 27, 36, 45, 54, 63, 0, 9, 18,
                                            27, 36, 45, 54, 63, 0,  0,  0,  0, 0, 0,
                                            0,  0,  0,  0,  0,  0,  0,  0,  0, 0};

/* The 64 bytes at p + off of a span of len bytes, zero past it; reads only bytes inside it. */
static inline __m512i q1q1_load_part(const uint8_t *p, size_t off, size_t len)
{
    if (off >= len)
        return _mm512_setzero_si512();
    const size_t r = len - off;
    return _mm512_maskz_loadu_epi8(r >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << r) - 1u, p + off);
}

/* Scores of 16 one-block rows at p (stride 18) into a vector, lane r for row r; live < 16 reads
 * only live rows (the other lanes are garbage). qb: the query block in every 128-bit lane,
 * vm: the valid bits likewise (used when partial), cnt: the values of the block. */
static inline __attribute__((always_inline)) __m512
q1q1_group1(const uint8_t *p, size_t live, __m512i qb, __m512i vm, int partial, __m512 vcnt,
            __m512 qd, const __m512i bidx[4], __m512i sidx, __m512i pidx)
{
    __m512i z[5], y0, y1;
    if (live == 16) {
        z[0] = _mm512_loadu_si512(p);
        z[1] = _mm512_loadu_si512(p + 64);
        z[2] = _mm512_loadu_si512(p + 128);
        z[3] = _mm512_loadu_si512(p + 192);
        /* Bytes 256..287; the upper half is never indexed (row 15 ends at word 143). */
        z[4] = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(const void *)(p + 256)));
        y0 = _mm512_loadu_si512(p + 144);
        y1 = _mm512_loadu_si512(p + 208);
    } else {
        const size_t len = live * EMB_Q1_BLOCK;
        for (int i = 0; i < 5; i++)
            z[i] = q1q1_load_part(p, 64 * (size_t)i, len);
        y0 = q1q1_load_part(p, 144, len);
        y1 = q1q1_load_part(p, 208, len);
    }
    __m512i c[4];
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        const __m512i w = _mm512_permutex2var_epi16(z[g], bidx[g], z[g + 1]);
        /* (w ^ qb) & vm in one vpternlogq when the block is partial. */
        c[g] = Q1Q1_POPCNT(partial ? _mm512_ternarylogic_epi64(w, qb, vm, 0x28)
                                   : _mm512_xor_si512(w, qb));
    }
    /* Lane l of s01: rows l and 4 + l (their two halves added); of s23: rows 8 + l, 12 + l. */
    const __m512i s01 =
        _mm512_add_epi64(_mm512_unpacklo_epi64(c[0], c[1]), _mm512_unpackhi_epi64(c[0], c[1]));
    const __m512i s23 =
        _mm512_add_epi64(_mm512_unpacklo_epi64(c[2], c[3]), _mm512_unpackhi_epi64(c[2], c[3]));
    const __m512i pop = _mm512_permutex2var_epi32(s01, pidx, s23);
    /* cnt - 2 pop, exact in float (integers below 2^24): one conversion and one fused step. */
    const __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pop), _mm512_set1_ps(-2.0f), vcnt);
    const __m512i sc =
        _mm512_mask_blend_epi16((__mmask32)0xff00u, _mm512_permutex2var_epi16(z[0], sidx, z[1]),
                                _mm512_permutex2var_epi16(y0, sidx, y1));
    const __m512 d = _mm512_cvtph_ps(_mm512_castsi512_si256(sc));
    return _mm512_fmadd_ps(_mm512_mul_ps(d, qd), v, _mm512_setzero_ps());
}

/* Adds blocks [0, nb) of 16 rows (row l at base + min(l, live - 1) * stride) into tot, lane l
 * for row l: the general shape. */
static inline __attribute__((always_inline)) __m512 q1q1_groupn(const uint8_t *base, size_t stride,
                                                                size_t live, const uint64_t *qbits,
                                                                const float *qd, size_t n,
                                                                __m512 tot)
{
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i offs = _mm512_mullo_epi32(
        _mm512_min_epu32(iota, _mm512_set1_epi32((int)live - 1)), _mm512_set1_epi32((int)stride));
    _Alignas(64) int32_t pop[16];
    for (size_t j0 = 0, b = 0; j0 < n; j0 += EMB_Q1_GROUP, b++, base += EMB_Q1_BLOCK) {
        const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
        uint64_t m[2];
        emb__q1_valid(cnt, m);
        const uint64_t m0 = m[0], m1 = m[1];
        const uint64_t q0 = qbits[2 * b], q1 = qbits[2 * b + 1];
#pragma GCC unroll 16
        for (size_t l = 0; l < 16; l++) {
            const uint8_t *p = base + (l < live ? l : live - 1) * stride;
            uint64_t w0, w1;
            memcpy(&w0, p + 2, sizeof w0);
            memcpy(&w1, p + 10, sizeof w1);
            pop[l] = __builtin_popcountll((w0 ^ q0) & m0) + __builtin_popcountll((w1 ^ q1) & m1);
        }
        const __m512i pv = _mm512_load_si512(pop);
        const __m512 v = _mm512_cvtepi32_ps(
            _mm512_sub_epi32(_mm512_set1_epi32((int)cnt), _mm512_add_epi32(pv, pv)));
        const __m512i g = _mm512_i32gather_epi32(offs, base, 1);
        const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
        tot = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(qd[b])), v, tot);
    }
    return tot;
}

static void Q1Q1_NAME(const uint8_t *rows, size_t stride, size_t nrows, const uint64_t *qbits,
                      const float *qd, size_t n, float *out)
{
    if (n <= EMB_Q1_GROUP && stride == EMB_Q1_BLOCK) {
        const __m512i base = _mm512_loadu_si512(q1q1_bits_idx);
        const __m512i bidx[4] = {base, _mm512_add_epi16(base, _mm512_set1_epi16(4)),
                                 _mm512_add_epi16(base, _mm512_set1_epi16(8)),
                                 _mm512_add_epi16(base, _mm512_set1_epi16(12))};
        const __m512i sidx = _mm512_loadu_si512(q1q1_scale_idx);
        const __m512i pidx =
            _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 16, 20, 24, 28, 18, 22, 26, 30);
        const __m512i qb = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)qbits));
        uint64_t m[2];
        emb__q1_valid(n, m);
        const __m512i vm = _mm512_broadcast_i32x4(_mm_set_epi64x((long long)m[1], (long long)m[0]));
        const __m512 vcnt = _mm512_set1_ps((float)n);
        const __m512 vqd = _mm512_set1_ps(qd[0]);
        const int partial = n < EMB_Q1_GROUP;
        size_t r0 = 0;
        for (; r0 + 16 <= nrows; r0 += 16) {
            /* The rows 8 KiB ahead, as the other many-row scans do. */
            const size_t from = r0 * stride + Q1Q1_PF_BYTES, to = from + 16 * EMB_Q1_BLOCK;
            for (size_t at = from; emb__prefetch && at < to && at < nrows * stride; at += 64)
                _mm_prefetch((const char *)rows + at, _MM_HINT_T0);
            const uint8_t *p = rows + r0 * stride;
            const __m512 s = partial ? q1q1_group1(p, 16, qb, vm, 1, vcnt, vqd, bidx, sidx, pidx)
                                     : q1q1_group1(p, 16, qb, vm, 0, vcnt, vqd, bidx, sidx, pidx);
            _mm512_storeu_ps(out + r0, s);
        }
        if (r0 < nrows) {
            const size_t live = nrows - r0;
            const __m512 s =
                q1q1_group1(rows + r0 * stride, live, qb, vm, partial, vcnt, vqd, bidx, sidx, pidx);
            _mm512_mask_storeu_ps(out + r0, (__mmask16)((1u << live) - 1u), s);
        }
        return;
    }
    size_t r0 = 0;
    for (; r0 + 16 <= nrows; r0 += 16) {
        const size_t from = r0 * stride + Q1Q1_PF_BYTES, to = (r0 + 16) * stride + Q1Q1_PF_BYTES;
        for (size_t at = from; emb__prefetch && at < to && at < nrows * stride; at += 64)
            _mm_prefetch((const char *)rows + at, _MM_HINT_T0);
        _mm512_storeu_ps(out + r0, q1q1_groupn(rows + r0 * stride, stride, 16, qbits, qd, n,
                                               _mm512_setzero_ps()));
    }
    if (r0 < nrows) {
        const size_t live = nrows - r0;
        _mm512_mask_storeu_ps(
            out + r0, (__mmask16)((1u << live) - 1u),
            q1q1_groupn(rows + r0 * stride, stride, live, qbits, qd, n, _mm512_setzero_ps()));
    }
}

/* Groups [g0, g0 + ng) of the interleaved copy, 32 scores each (see the top of the file). */
static void Q1Q1I_GROUPS(const uint8_t *ilv, size_t g0, size_t ng, const uint64_t *qbits,
                         const float *qd, size_t n, float *out, float *n2)
{
    const size_t nb = emb_q1_blocks((uint32_t)n);
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const uint8_t *t = ilv + g0 * nb * EMB_Q1I_TILE;
    for (size_t g = 0; g < ng; g++, out += EMB_Q1I_ROWS) {
        __m512 tot0 = _mm512_setzero_ps(), tot1 = _mm512_setzero_ps();
        for (size_t j0 = 0, b = 0; j0 < n; j0 += EMB_Q1_GROUP, b++, t += EMB_Q1I_TILE) {
            const size_t cnt = n - j0 < EMB_Q1_GROUP ? n - j0 : EMB_Q1_GROUP;
            const __m512i q0 = _mm512_set1_epi64((long long)qbits[2 * b]);
            const __m512i q1 = _mm512_set1_epi64((long long)qbits[2 * b + 1]);
            __m512i c[4];
            if (cnt == EMB_Q1_GROUP) {
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++)
                    c[k] = _mm512_add_epi64(
                        Q1Q1_POPCNT(_mm512_xor_si512(_mm512_loadu_si512(t + 64 * k), q0)),
                        Q1Q1_POPCNT(_mm512_xor_si512(_mm512_loadu_si512(t + 256 + 64 * k), q1)));
            } else {
                uint64_t m[2];
                emb__q1_valid(cnt, m);
                const __m512i m0 = _mm512_set1_epi64((long long)m[0]);
                const __m512i m1 = _mm512_set1_epi64((long long)m[1]);
                /* (w ^ q) & m in one vpternlogq. */
                for (int k = 0; k < 4; k++)
                    c[k] =
                        _mm512_add_epi64(Q1Q1_POPCNT(_mm512_ternarylogic_epi64(
                                             _mm512_loadu_si512(t + 64 * k), q0, m0, 0x28)),
                                         Q1Q1_POPCNT(_mm512_ternarylogic_epi64(
                                             _mm512_loadu_si512(t + 256 + 64 * k), q1, m1, 0x28)));
            }
            const __m512 vcnt = _mm512_set1_ps((float)cnt), m2 = _mm512_set1_ps(-2.0f);
            const __m512 v0 = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(_mm512_permutex2var_epi32(c[0], even, c[1])), m2, vcnt);
            const __m512 v1 = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(_mm512_permutex2var_epi32(c[2], even, c[3])), m2, vcnt);
            const __m512i sc = _mm512_loadu_si512(t + 512);
            const __m512 vqd = _mm512_set1_ps(qd[b]);
            const __m512 d0 = _mm512_cvtph_ps(_mm512_castsi512_si256(sc));
            const __m512 d1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(sc, 1));
            tot0 = _mm512_fmadd_ps(_mm512_mul_ps(d0, vqd), v0, tot0);
            tot1 = _mm512_fmadd_ps(_mm512_mul_ps(d1, vqd), v1, tot1);
            if (n2) { /* one block per row */
                _mm512_storeu_ps(n2, _mm512_mul_ps(_mm512_mul_ps(d0, d0), vcnt));
                _mm512_storeu_ps(n2 + 16, _mm512_mul_ps(_mm512_mul_ps(d1, d1), vcnt));
                n2 += EMB_Q1I_ROWS;
            }
        }
        _mm512_storeu_ps(out, tot0);
        _mm512_storeu_ps(out + 16, tot1);
    }
}

static void Q1Q1I_NAME(const uint8_t *ilv, size_t r0, size_t nrows, const uint64_t *qbits,
                       const float *qd, size_t n, float *out, float *n2)
{
    emb__q1i_drive(Q1Q1I_GROUPS, ilv, r0, nrows, qbits, qd, n, out, n2);
}
