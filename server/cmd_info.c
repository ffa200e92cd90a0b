/*
 * cmd_info.c - `embd info FILE` and `embd verify FILE`.
 *
 * info reads the header, the section table, the key-index header and the metadata, never the
 * rows, so it answers at once for any size of store. verify reads everything.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "emb.h"
#include "jsonutil.h"

static const char *codec_list(uint32_t codecs, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s%s", codecs & EMB_CODEC_F32 ? "f32 " : "",
             codecs & EMB_CODEC_F16 ? "f16 " : "", codecs & EMB_CODEC_Q1 ? "q1 " : "");
    size_t n = strlen(buf);
    if (n)
        buf[n - 1] = 0;
    return buf;
}

static json_t *info_json(const char *path, const emb_store *s)
{
    const emb_header *h = s->header;
    json_t *o = json_object();
    json_t *codecs = srv_json_codecs(s->codecs);
    char crc[16];
    snprintf(crc, sizeof crc, "%08x", s->checksum);
    json_object_set_new(o, "file", json_string(path));
    json_object_set_new(o, "file_size", json_integer((json_int_t)h->file_size));
    json_object_set_new(o, "version", json_sprintf("%u.%u", h->version_major, h->version_minor));
    json_object_set_new(o, "rows", json_integer((json_int_t)s->rows));
    json_object_set_new(o, "dim", json_integer(s->dim));
    json_object_set_new(o, "codecs", codecs);
    json_object_set_new(o, "metric", json_string(emb_metric_name(s->metric)));
    json_object_set_new(o, "normalized", json_boolean(s->flags & EMB_FLAG_NORMALIZED));
    json_object_set_new(o, "keys", json_boolean(s->key_offs != NULL));
    if (s->key_hash) {
        json_object_set_new(o, "key_index",
                            json_pack("{s:I, s:i}", "capacity", (json_int_t)s->key_hash->capacity,
                                      "max_probe", (int)s->key_hash->max_probe));
    }
    json_object_set_new(o, "checksum", json_string(crc));
    json_t *secs = json_array();
    for (uint32_t i = 0; i < h->section_count; i++) {
        const emb_section *e = &s->sections[i];
        snprintf(crc, sizeof crc, "%08x", e->crc);
        json_array_append_new(
            secs, json_pack("{s:s, s:I, s:I, s:s}", "kind", emb_section_name(e->kind), "offset",
                            (json_int_t)e->offset, "length", (json_int_t)e->length, "crc32c", crc));
    }
    json_object_set_new(o, "sections", secs);
    if (s->meta) {
        json_error_t jerr;
        json_t *m = json_loadb(s->meta, s->meta_len, JSON_REJECT_DUPLICATES, &jerr);
        json_object_set_new(o, "metadata", m ? m : srv_json_bytes(s->meta, s->meta_len));
    }
    return o;
}

static void info_text(const char *path, const emb_store *s)
{
    const emb_header *h = s->header;
    char buf[64];
    printf("file       %s (%llu bytes)\n", path, (unsigned long long)h->file_size);
    printf("format     embd store v%u.%u, little-endian, checksum %08x\n", h->version_major,
           h->version_minor, s->checksum);
    printf("rows       %llu\n", (unsigned long long)s->rows);
    printf("dim        %u\n", s->dim);
    printf("codecs     %s\n", codec_list(s->codecs, buf, sizeof buf));
    printf("metric     %s%s\n", emb_metric_name(s->metric),
           s->flags & EMB_FLAG_NORMALIZED ? " (rows L2-normalised)" : "");
    if (s->key_hash)
        printf("keys       %llu (hash index: %llu slots, longest probe %u)\n",
               (unsigned long long)s->rows, (unsigned long long)s->key_hash->capacity,
               s->key_hash->max_probe);
    else
        printf("keys       none\n");
    printf("sections   %-10s %14s %14s %10s\n", "kind", "offset", "length", "crc32c");
    for (uint32_t i = 0; i < h->section_count; i++) {
        const emb_section *e = &s->sections[i];
        printf("           %-10s %14llu %14llu   %08x\n", emb_section_name(e->kind),
               (unsigned long long)e->offset, (unsigned long long)e->length, e->crc);
    }
    if (s->meta) {
        json_error_t jerr;
        json_t *m = json_loadb(s->meta, s->meta_len, JSON_REJECT_DUPLICATES, &jerr);
        printf("metadata\n");
        if (m) {
            char *txt =
                json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7));
            printf("%s\n", txt ? txt : "(out of memory)");
            free(txt);
            json_decref(m);
        } else {
            printf("  (not valid JSON: %s) %.*s\n", jerr.text, (int)s->meta_len, s->meta);
        }
    }
}

static int one_file_command(int argc, char **argv, const char *help, int *json)
{
    static const struct option longopts[] = {
        {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "jh", longopts, NULL)) != -1) {
        switch (c) {
        case 'j': *json = 1; break;
        case 'h': fputs(help, stdout); return 0;
        default: fputs(help, stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        fputs(help, stderr);
        return 2;
    }
    return -1;
}

int cmd_info(int argc, char **argv)
{
    static const char help[] =
        "usage: embd info [--json] FILE\n"
        "\n"
        "Describes a store: header, sections, sizes, codecs, dim, keys and metadata (with the\n"
        "quantization figures from embd pack). Reads no rows.\n"
        "  -j, --json   machine-readable output\n"
        "  -h, --help   this text\n";
    int json = 0;
    int rc = one_file_command(argc, argv, help, &json);
    if (rc >= 0)
        return rc;
    const char *path = argv[optind];
    emb_store *s;
    emb_error err = {0};
    if ((rc = emb_store_open(&s, path, &err)) != 0) {
        fprintf(stderr, "embd info: %s\n", err.msg);
        return 1;
    }
    if (json) {
        json_t *o = info_json(path, s);
        char *txt = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(7));
        printf("%s\n", txt ? txt : "{}");
        free(txt);
        json_decref(o);
    } else {
        info_text(path, s);
    }
    emb_store_close(s);
    return 0;
}

int cmd_verify(int argc, char **argv)
{
    static const char help[] =
        "usage: embd verify [--json] FILE\n"
        "\n"
        "Checks a store completely: header, section bounds, every CRC-32C, key offsets and\n"
        "index, padding and norms. Exit code 0 only when the file is sound; otherwise the\n"
        "message names the failed check.\n"
        "  -j, --json   machine-readable output\n"
        "  -h, --help   this text\n";
    int json = 0;
    int rc = one_file_command(argc, argv, help, &json);
    if (rc >= 0)
        return rc;
    const char *path = argv[optind];
    emb_store *s = NULL;
    emb_error err = {0};
    rc = emb_store_open(&s, path, &err);
    if (rc == 0 && (rc = emb_store_verify(s, &err)) != 0)
        emb_error_prefix(&err, path);
    if (json) {
        json_t *o = json_pack("{s:s, s:b}", "file", path, "ok", rc == 0);
        if (rc)
            json_object_set_new(o, "error", json_string(err.msg));
        char *txt = json_dumps(o, JSON_PRESERVE_ORDER);
        printf("%s\n", txt ? txt : "{}");
        free(txt);
        json_decref(o);
    } else if (rc) {
        fprintf(stderr, "embd verify: %s\n", err.msg);
    } else {
        printf("ok: %s (%llu rows x %u, %u sections, all checksums match)\n", path,
               (unsigned long long)s->rows, s->dim, s->header->section_count);
    }
    emb_store_close(s);
    return rc ? 1 : 0;
}
