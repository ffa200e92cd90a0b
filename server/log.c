/*
 * log.c - one line per event on stderr, as JSON or as text. Each line is formatted into a
 * local buffer and written with one write(2), so lines from different threads never interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
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
    for (; *s && *n + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[(*n)++] = '\\';
            buf[(*n)++] = (char)c;
        } else if (c < 0x20) {
            *n += (size_t)snprintf(buf + *n, cap - *n, "\\u%04x", c);
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

void srv_log(int level, const char *msg, ...)
{
    if (level < log_level)
        return;
    char buf[4096], ts[40];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%03dZ", (int)(tv.tv_usec / 1000));
    size_t n = 0;
    va_list ap;
    va_start(ap, msg);
    if (log_json) {
        n += (size_t)snprintf(buf, sizeof buf, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                              level_names[level]);
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
        n += (size_t)snprintf(buf, sizeof buf, "%s %-5s %s", ts, level_names[level], msg);
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
