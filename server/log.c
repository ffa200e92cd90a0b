/*
 * log.c - one line per event on stderr, as JSON or as text. Each line is formatted into a
 * local buffer and written with one write(2), so lines from different threads never interleave.
 * srv_log is async-signal-safe (no stdio, no locale, no allocation): the SIGBUS handler uses it.
 */
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "srv.h"

static int log_json = 1, log_level = SRV_LOG_INFO;
static const char *level_names[] = {"debug", "info", "warn", "error"};

void srv_log_init(int json, int level)
{
    log_json = json;
    log_level = level;
}

/* Appends s as a JSON string body (without quotes) to buf at *n, escaping as needed. */
static void put_json(char *buf, size_t cap, size_t *n, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s && *n + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[(*n)++] = '\\';
            buf[(*n)++] = (char)c;
        } else if (c < 0x20) {
            memcpy(buf + *n, "\\u00", 4);
            buf[*n + 4] = hex[c >> 4];
            buf[*n + 5] = hex[c & 15];
            *n += 6;
        } else {
            buf[(*n)++] = (char)c;
        }
    }
}

static void put(char *buf, size_t cap, size_t *n, const char *s)
{
    size_t l = strlen(s);
    if (l > cap - *n - 2)
        l = cap - *n - 2;
    memcpy(buf + *n, s, l);
    *n += l;
}

/* Writes v as `width` decimal digits, zero-padded. */
static void put_digits(char *p, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
}

/* Formats t as "YYYY-MM-DDTHH:MM:SS.mmmZ" (24 bytes + NUL) with arithmetic only: gmtime_r and
 * strftime are not async-signal-safe, and srv_log is called from the SIGBUS handler. The date
 * is Howard Hinnant's days-to-civil algorithm. */
static void format_ts(char ts[25], const struct timespec *t)
{
    int64_t days = t->tv_sec / 86400, sod = t->tv_sec % 86400;
    days += 719468;
    int64_t era = days / 146097, doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);
    memcpy(ts, "0000-00-00T00:00:00.000Z", 25);
    put_digits(ts, (uint64_t)y, 4);
    put_digits(ts + 5, (uint64_t)m, 2);
    put_digits(ts + 8, (uint64_t)d, 2);
    put_digits(ts + 11, (uint64_t)(sod / 3600), 2);
    put_digits(ts + 14, (uint64_t)(sod / 60 % 60), 2);
    put_digits(ts + 17, (uint64_t)(sod % 60), 2);
    put_digits(ts + 20, (uint64_t)(t->tv_nsec / 1000000), 3);
}

void srv_log(int level, const char *msg, ...)
{
    if (level < log_level)
        return;
    char buf[4096], ts[25];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    format_ts(ts, &now);
    size_t n = 0;
    va_list ap;
    va_start(ap, msg);
    if (log_json) {
        put(buf, sizeof buf, &n, "{\"ts\":\"");
        put(buf, sizeof buf, &n, ts);
        put(buf, sizeof buf, &n, "\",\"level\":\"");
        put(buf, sizeof buf, &n, level_names[level]);
        put(buf, sizeof buf, &n, "\",\"msg\":\"");
        put_json(buf, sizeof buf, &n, msg);
        put(buf, sizeof buf, &n, "\"");
        const char *k;
        while ((k = va_arg(ap, const char *))) {
            const char *v = va_arg(ap, const char *);
            put(buf, sizeof buf, &n, ",\"");
            put_json(buf, sizeof buf, &n, k);
            put(buf, sizeof buf, &n, "\":\"");
            put_json(buf, sizeof buf, &n, v ? v : "");
            put(buf, sizeof buf, &n, "\"");
        }
        put(buf, sizeof buf, &n, "}");
    } else {
        put(buf, sizeof buf, &n, ts);
        put(buf, sizeof buf, &n, " ");
        put(buf, sizeof buf, &n, level_names[level]);
        put(buf, sizeof buf, &n, &"     "[strlen(level_names[level])]); /* pad to 5 */
        put(buf, sizeof buf, &n, " ");
        put(buf, sizeof buf, &n, msg);
        const char *k;
        while ((k = va_arg(ap, const char *))) {
            const char *v = va_arg(ap, const char *);
            put(buf, sizeof buf, &n, " ");
            put(buf, sizeof buf, &n, k);
            put(buf, sizeof buf, &n, "=");
            put(buf, sizeof buf, &n, v ? v : "");
        }
    }
    va_end(ap);
    if (n > sizeof buf - 1)
        n = sizeof buf - 1;
    buf[n++] = '\n';
    if (write(STDERR_FILENO, buf, n) < 0) {
        /* Nowhere left to report it. */
    }
}
