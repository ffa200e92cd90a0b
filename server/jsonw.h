/*
 * jsonw.h - a fast JSON writer into a growable buffer, for responses with large float arrays.
 *
 * jansson builds a tree and formats floats with printf: fine for small objects, far too slow for
 * a gather of 1000 x 768 values. jsonw appends straight into one buffer: floats in the shortest
 * decimal text that reads back (strtof) to the same float, strings escaped (invalid UTF-8 bytes
 * become U+FFFD so the output is always valid JSON), base64 for binary vectors. Non-finite floats
 * are written as null: never invalid JSON. It is plain code with no global state: safe on any
 * thread (workers encode responses; only the loop thread uses jansson).
 */
#ifndef SRV_JSONW_H
#define SRV_JSONW_H

#include <stddef.h>
#include <stdint.h>

typedef struct jsonw {
    char *buf;
    size_t len, cap;
    int oom; /* set once an allocation failed; later appends do nothing */
} jsonw;

/* Starts empty with room for cap bytes (0: a small default). Returns 0 or -ENOMEM. */
int jsonw_init(jsonw *w, size_t cap);
/* Frees the buffer. */
void jsonw_free(jsonw *w);
/* Hands the buffer to the caller (malloc'd, NUL-terminated, length in *len) and resets w. */
char *jsonw_steal(jsonw *w, size_t *len);
/* Frees a buffer from jsonw_steal, or any other malloc'd block: blocks of the size jsonw starts
 * with are kept for this thread's next jsonw_init instead, and a few large ones for any
 * thread's (see jsonw.c). Any thread. */
void jsonw_release(void *p);
/* Frees the large buffers kept for reuse (see jsonw.c) once none was taken or kept for a while;
 * call it now and then with a monotonic clock in seconds (the loops' tick does). Any thread. */
void jsonw_trim(double now);
/* Bytes of the large buffers kept for reuse now. Any thread. */
size_t jsonw_kept_bytes(void);

void jsonw_raw(jsonw *w, const char *s, size_t n);
void jsonw_cstr(jsonw *w, const char *s); /* raw text, e.g. "{\"id\":" */
void jsonw_char(jsonw *w, char c);
/* A JSON string of n raw bytes (quotes included). */
void jsonw_string(jsonw *w, const char *s, size_t n);
void jsonw_u64(jsonw *w, uint64_t v);
void jsonw_i64(jsonw *w, int64_t v);
/* The shortest decimal that strtof reads back to exactly v ("1", "0.1", "1e-07", "-0");
 * null for NaN and infinities. */
void jsonw_float(jsonw *w, float v);
/* A double with up to 17 significant digits, shortest round trip; null when not finite. */
void jsonw_double(jsonw *w, double v);
/* [v0,v1,...] of n floats. */
void jsonw_float_array(jsonw *w, const float *v, size_t n);
/* The same text as jsonw_float_array over the f16 values h[0..n) widened to float, from the f16
 * table (no conversion, no digit search) once jsonw_tables_init has run. */
void jsonw_f16_array(jsonw *w, const uint16_t *h, size_t n);
/* A JSON string holding the standard base64 (RFC 4648, padded) of n bytes. */
void jsonw_base64(jsonw *w, const void *data, size_t n);

/* Fills the table that prints floats an f16 holds exactly (the values of f16 stores) with a
 * copy instead of a digit search; the output is the same byte for byte. Call once before any
 * thread starts (cmd_serve does); without it jsonw is correct, only slower. */
void jsonw_tables_init(void);

/* Formats v like jsonw_float into out (at least 32 bytes), without the table; returns the
 * length. */
size_t srv_format_float(float v, char *out);

/* Decodes standard base64 (padding required, no whitespace) of len chars into out (room for
 * len / 4 * 3 bytes). Returns the decoded length, or -1 when the text is not valid base64. */
long srv_base64_decode(const char *in, size_t len, uint8_t *out);

#endif
