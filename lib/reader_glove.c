/*
 * reader_glove.c - GloVe text ("word v1 ... vdim" per line, no header) and the text-row parser
 * shared with word2vec text.
 *
 * dim is not written anywhere, so it is read off the first line: the number of trailing fields
 * that parse as numbers (all fields but the first when every field does). Counting from the right
 * keeps the first line right even when its word contains spaces, as some GloVe releases' words do
 * (". . ."). Rows are unknown in advance (info.rows = UINT64_MAX).
 *
 * A row is parsed left to right in one pass: the word up to the first space, then dim numbers
 * straight out of the read buffer. Only when that fails (a non-number, or extra fields) is the
 * line split from the right: the word is everything before the last dim fields. Extra fields are
 * then ambiguous (a word with spaces, or a ragged row whose values spill into the word): when the
 * field just before the vector is itself a number the row is refused as ragged, because a silent
 * key like "cat 0.25" is worse than a clear error. Separators are ASCII spaces only (runs count
 * as one); a trailing '\r' and trailing spaces are ignored; blank lines are skipped.
 *
 * Speed: 400-450 MB/s (best of 3; 270-350 MB/s while other builds share the 2-core Xeon VM) on
 * 350-380 MB word2vec text and GloVe files of 100-dim rows printed as "%.6f", as shortest float
 * repr or as "%.9g", warm page cache; emb_parse_float is ~80% of the time, then this row loop,
 * the kernel's copy and memchr.
 */
#include <math.h>
#include <string.h>

#include "reader_internal.h"

/* Reports a field that is not a number (quoted, shortened). */
static int bad_number(const char *p, const char *end, uint32_t i, uint64_t line_no, emb_error *err)
{
    const char *fe = p;
    while (fe < end && *fe != ' ')
        fe++;
    int n = fe - p > 40 ? 40 : (int)(fe - p);
    return emb_error_set(err, EMB_ECORRUPT, "line %llu, value %u: '%.*s%s' is not a number",
                         (unsigned long long)line_no, i + 1, n, p, fe - p > 40 ? "..." : "");
}

/* The slow path: the word is everything before the last dim fields. */
static int split_right(const char *line, const char *end, uint32_t dim, float *vec, size_t *key_len,
                       uint64_t line_no, emb_error *err)
{
    const char *s = end;
    uint32_t n = 0;
    while (n < dim && s > line) {
        while (s > line && s[-1] != ' ')
            s--;
        if (++n == dim)
            break;
        while (s > line && s[-1] == ' ')
            s--;
    }
    if (n < dim)
        return emb_error_set(err, EMB_ECORRUPT,
                             "line %llu: %u fields, expected a word and %u "
                             "values",
                             (unsigned long long)line_no, n, dim);
    if (s == line)
        return emb_error_set(err, EMB_ECORRUPT,
                             "line %llu: %u values with no word before them (expected a word and "
                             "%u values)",
                             (unsigned long long)line_no, dim, dim);
    const char *we = s;
    while (we > line && we[-1] == ' ')
        we--;
    const char *ls = we;
    while (ls > line && ls[-1] != ' ')
        ls--;
    float tmp;
    if (ls > line && ls < we && emb_parse_float(ls, we, &tmp) == we)
        return emb_error_set(err, EMB_ECORRUPT,
                             "line %llu: more than %u values (a ragged row; a word ending in a "
                             "number is not taken as a word with spaces)",
                             (unsigned long long)line_no, dim);
    const char *p = s;
    for (uint32_t i = 0; i < dim; i++) {
        while (*p == ' ')
            p++;
        const char *q = emb_parse_float(p, end, &vec[i]);
        if (!q || (q < end && *q != ' '))
            return bad_number(p, end, i, line_no, err);
        p = q;
    }
    *key_len = (size_t)(we - line);
    return 0;
}

int emb__text_row(const char *line, const char *end, uint32_t dim, float *vec, const char **key,
                  size_t *key_len, uint64_t line_no, emb_error *err)
{
    int rc;
    const char *sp = memchr(line, ' ', (size_t)(end - line));
    if (!sp)
        return emb_error_set(err, EMB_ECORRUPT, "line %llu: a word and no values (expected %u)",
                             (unsigned long long)line_no, dim);
    const char *p = sp + 1;
    uint32_t i;
    for (i = 0; i < dim; i++) {
        while (p < end && *p == ' ')
            p++;
        if (p == end)
            return emb_error_set(err, EMB_ECORRUPT, "line %llu: %u values, expected %u",
                                 (unsigned long long)line_no, i, dim);
        const char *q = emb_parse_float(p, end, &vec[i]);
        if (!q || (q < end && *q != ' '))
            break;
        p = q;
    }
    if (i == dim && p == end) {
        *key_len = (size_t)(sp - line);
    } else if ((rc = split_right(line, end, dim, vec, key_len, line_no, err)) < 0) {
        return rc;
    }
    if (*key_len > EMB_MAX_KEY)
        return emb_error_set(err, EMB_ECORRUPT,
                             "line %llu: word of %zu bytes exceeds the %u-byte key limit",
                             (unsigned long long)line_no, *key_len, EMB_MAX_KEY);
    for (i = 0; i < dim; i++) {
        if (!isfinite(vec[i]))
            return emb_error_set(
                err, EMB_ECORRUPT, "line %llu, value %u is %s: a store must hold finite numbers",
                (unsigned long long)line_no, i + 1, isnan(vec[i]) ? "NaN" : "infinite");
    }
    *key = line;
    return 0;
}

static int glove_open(emb_reader *r, const char *tensor, emb_error *err)
{
    (void)tensor;
    const char *line, *end;
    for (;;) {
        int rc = emb__text_line(&r->in, &line, &end, err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return emb_error_set(err, EMB_EFORMAT, "GloVe input has no rows (empty file)");
        r->line++;
        if (line != end)
            break;
    }
    /* Count the trailing fields that are numbers. */
    uint64_t count = 0;
    int all = 1;
    const char *fe = end;
    while (fe > line) {
        const char *fs = fe;
        while (fs > line && fs[-1] != ' ')
            fs--;
        float v;
        if (emb_parse_float(fs, fe, &v) != fe) {
            all = 0;
            break;
        }
        count++;
        fe = fs;
        while (fe > line && fe[-1] == ' ')
            fe--;
    }
    uint64_t dim = all && line[0] != ' ' ? count - 1 : count;
    if (dim == 0)
        return emb_error_set(err, EMB_EFORMAT,
                             "not GloVe text: line %llu has no numbers after its first field",
                             (unsigned long long)r->line);
    if (dim > EMB_MAX_DIM)
        return emb_error_set(err, EMB_EUNSUPPORTED,
                             "GloVe line %llu has %llu values, over the "
                             "%u-value limit",
                             (unsigned long long)r->line, (unsigned long long)dim, EMB_MAX_DIM);
    r->info.rows = UINT64_MAX;
    r->info.dim = (uint32_t)dim;
    r->info.has_keys = 1;
    strcpy(r->info.source_dtype, "text");
    /* Hand the first line out again as row 0: it is still in the buffer. */
    r->in.pos = (size_t)((const uint8_t *)line - r->in.buf);
    r->line--;
    return 0;
}

static int glove_next(emb_reader *r, emb_row *row, emb_error *err)
{
    const char *line, *end;
    for (;;) {
        int rc = emb__text_line(&r->in, &line, &end, err);
        if (rc <= 0)
            return rc;
        r->line++;
        if (line != end)
            break;
    }
    int rc = emb__text_row(line, end, r->info.dim, r->vec, &row->key, &row->key_len, r->line, err);
    return rc < 0 ? rc : 1;
}

const emb__reader_ops emb__glove_ops = {glove_open, glove_next, NULL};
