/*
 * error.c - the one error space of libembd: negated errno for system errors, EMB_E* for ours.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "emb.h"

const char *emb_strerror(int code)
{
    switch (code) {
    case 0: return "success";
    case EMB_ECORRUPT: return "corrupt file";
    case EMB_EVERSION: return "unsupported format version";
    case EMB_EBYTEORDER: return "foreign byte order";
    case EMB_ECHECKSUM: return "checksum mismatch";
    case EMB_ETRUNCATED: return "file truncated";
    case EMB_EFORMAT: return "unrecognised input format";
    case EMB_EUNSUPPORTED: return "unsupported input";
    case EMB_EINVAL: return "invalid argument";
    case EMB_ENOTFOUND: return "not found";
    case EMB_ERANGE: return "out of range";
    case EMB_ENOMEM: return "out of memory";
    default: break;
    }
    if (code < 0 && code > -4096)
        return strerror(-code);
    return "unknown error";
}

int emb_error_set(emb_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void emb_error_prefix(emb_error *err, const char *prefix)
{
    if (!err)
        return;
    char tmp[sizeof err->msg];
    size_t n = strlen(prefix);
    if (n > sizeof tmp - 3)
        n = sizeof tmp - 3;
    memcpy(tmp, prefix, n);
    tmp[n++] = ':';
    tmp[n++] = ' ';
    size_t rest = strnlen(err->msg, sizeof err->msg);
    if (rest > sizeof tmp - 1 - n)
        rest = sizeof tmp - 1 - n;
    memcpy(tmp + n, err->msg, rest);
    tmp[n + rest] = 0;
    memcpy(err->msg, tmp, sizeof tmp);
}

const char *emb_metric_name(emb_metric m)
{
    switch (m) {
    case EMB_METRIC_COS: return "cos";
    case EMB_METRIC_DOT: return "dot";
    case EMB_METRIC_L2: return "l2";
    }
    return "unknown";
}

int emb_metric_parse(const char *s, emb_metric *out)
{
    static const emb_metric all[] = {EMB_METRIC_COS, EMB_METRIC_DOT, EMB_METRIC_L2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (strcmp(s, emb_metric_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return EMB_EINVAL;
}
