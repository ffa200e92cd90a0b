/*
 * jsonutil.h - small jansson helpers shared by the CLI commands (and later the server).
 */
#ifndef SRV_JSONUTIL_H
#define SRV_JSONUTIL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* A new JSON string from len raw bytes; bytes that are not valid UTF-8 become U+FFFD (jansson
 * refuses invalid UTF-8). Returns NULL only when out of memory. */
json_t *srv_json_bytes(const char *s, size_t len);

/* A new JSON array of codec names ("f32", "f16", "q1") for EMB_CODEC_* bits. */
json_t *srv_json_codecs(uint32_t codecs);

/* A new JSON number for a float, or null when it is not finite (jansson cannot hold those). */
json_t *srv_json_real(double v);

#endif
