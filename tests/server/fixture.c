/*
 * fixture.c - the real server on loopback, and a libcurl client (see fixture.h).
 */
#include "fixture.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

double th_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void th_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

const char *th_demo_store(void)
{
    static char *path;
    if (!path) {
        char *txt = th_path("demo.txt");
        path = th_path("demo.emb");
        cr_assert_eq(th_system("'%s' gen --kind demo -o '%s' -q >/dev/null && '%s' pack '%s' -o "
                               "'%s' --dtype f16+q1 -q >/dev/null",
                               EMBD_BIN, txt, EMBD_BIN, txt, path),
                     0, "packing the demo store");
        free(txt);
    }
    return path;
}

int th_server_foreign(void)
{
    const char *bin = getenv("EMBD_TEST_SERVER_BIN");
    return bin && *bin;
}

void th_server_start(th_server *s, const char *const *args)
{
    memset(s, 0, sizeof *s);
    static int n;
    snprintf(s->log_path, sizeof s->log_path, "%s/server-%d-%d.log", th_tmpdir(), (int)getpid(),
             n++);
    /* $EMBD_TEST_SERVER_BIN runs the suite against another build of the server (the
     * ThreadSanitizer step of scripts/test.sh); every other embd command uses EMBD_BIN. */
    const char *bin = getenv("EMBD_TEST_SERVER_BIN");
    if (!bin || !*bin)
        bin = EMBD_BIN;
    const char *argv[64];
    int a = 0;
    argv[a++] = bin;
    argv[a++] = "serve";
    argv[a++] = "--listen";
    argv[a++] = "127.0.0.1:0";
    argv[a++] = "--log-format";
    argv[a++] = "text";
    argv[a++] = "--shutdown-delay";
    argv[a++] = "0";
    for (int i = 0; args && args[i] && a < 62; i++)
        argv[a++] = args[i];
    argv[a] = NULL;
    s->pid = fork();
    cr_assert_geq(s->pid, 0);
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a crashed test leaves no server behind */
        int fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        dup2(fd, 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    double t0 = th_now_s();
    while (th_now_s() - t0 < 20) {
        size_t len;
        FILE *f = fopen(s->log_path, "r");
        if (f) {
            char line[1024];
            while (fgets(line, sizeof line, f)) {
                const char *u = strstr(line, "url=http://127.0.0.1:");
                if (u) {
                    s->port = atoi(u + strlen("url=http://127.0.0.1:"));
                    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", s->port);
                    fclose(f);
                    return;
                }
            }
            fclose(f);
        }
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            char *log = th_read_file(s->log_path, &len);
            cr_assert_fail("embd serve exited at start: %s", log);
        }
        usleep(20000);
    }
    kill(s->pid, SIGKILL);
    cr_assert_fail("embd serve did not start within 20 s");
}

int th_server_stop(th_server *s, int sig)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, sig);
    double t0 = th_now_s();
    int st;
    while (th_now_s() - t0 < 30) {
        pid_t p = waitpid(s->pid, &st, WNOHANG);
        if (p == s->pid) {
            s->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        usleep(10000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
    return -2;
}

size_t th_curl_body(char *data, size_t size, size_t n, void *ud)
{
    th_buf *b = ud;
    size_t add = size * n;
    char *np = realloc(b->p, b->len + add + 1);
    if (!np)
        return 0;
    memcpy(np + b->len, data, add);
    b->p = np;
    b->len += add;
    b->p[b->len] = 0;
    return add;
}

static void copy_header(char *dst, size_t cap, const char *line, size_t n, const char *name)
{
    size_t nl = strlen(name);
    if (n > nl + 1 && !strncasecmp(line, name, nl) && line[nl] == ':') {
        const char *v = line + nl + 1;
        while (*v == ' ')
            v++;
        size_t vl = (size_t)(line + n - v);
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
            vl--;
        snprintf(dst, cap, "%.*s", (int)vl, v);
    }
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    th_response *r = ud;
    size_t len = size * n;
    copy_header(r->content_type, sizeof r->content_type, data, len, "Content-Type");
    copy_header(r->request_id, sizeof r->request_id, data, len, "X-Request-Id");
    copy_header(r->etag, sizeof r->etag, data, len, "ETag");
    copy_header(r->retry_after, sizeof r->retry_after, data, len, "Retry-After");
    copy_header(r->allow, sizeof r->allow, data, len, "Allow");
    copy_header(r->missing, sizeof r->missing, data, len, "X-Embd-Missing");
    copy_header(r->fault_fired, sizeof r->fault_fired, data, len, "X-Embd-Fault-Fired");
    return len;
}

/* Appends the exchange to $EMBD_EXCHANGES as one JSON line (body as a JSON string). */
static void record(const char *method, const char *path, const th_response *r)
{
    const char *file = getenv("EMBD_EXCHANGES");
    if (!file || !*file)
        return;
    FILE *f = fopen(file, "a");
    if (!f)
        return;
    fprintf(f, "{\"method\":\"%s\",\"path\":\"", method);
    for (const char *p = path; *p; p++)
        fprintf(f, (*p == '"' || *p == '\\') ? "\\%c" : "%c", *p);
    fprintf(f, "\",\"status\":%ld,\"content_type\":\"%s\",\"body\":\"", r->status, r->content_type);
    for (size_t i = 0; i < r->len; i++) {
        unsigned char c = (unsigned char)r->body[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fprintf(f, "\"}\n");
    fclose(f);
}

int th_request(const th_server *s, const char *method, const char *path, const char *body,
               const char *const *headers, th_response *r)
{
    memset(r, 0, sizeof *r);
    CURL *c = curl_easy_init();
    cr_assert_not_null(c);
    char url[2048];
    snprintf(url, sizeof url, "%s%s", s->base, path);
    th_buf b = {0};
    struct curl_slist *hl = NULL;
    int has_ct = 0;
    for (int i = 0; headers && headers[i]; i++) {
        hl = curl_slist_append(hl, headers[i]);
        if (!strncasecmp(headers[i], "Content-Type:", 13))
            has_ct = 1;
    }
    if (body && !has_ct)
        hl = curl_slist_append(hl, "Content-Type: application/json");
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, th_curl_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    r->body = b.p ? b.p : calloc(1, 1);
    r->len = b.len;
    if (rc == CURLE_OK)
        record(method, path, r);
    return (int)rc;
}

void th_response_free(th_response *r)
{
    free(r->body);
    r->body = NULL;
}

char *th_raw(const th_server *s, const char *data, size_t len, int timeout_ms, size_t *out_len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    size_t cap = 65536, got = 0;
    char *buf = malloc(cap + 1);
    double t0 = th_now_s();
    while ((th_now_s() - t0) * 1000 < timeout_ms && got < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = timeout_ms - (int)((th_now_s() - t0) * 1000);
        if (poll(&p, 1, left > 0 ? left : 0) <= 0)
            break;
        ssize_t n = recv(fd, buf + got, cap - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = 0;
    *out_len = got;
    return buf;
}

long th_server_rss_kb(const th_server *s)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)s->pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = atol(line + 6);
    fclose(f);
    return kb;
}

int th_server_fd_count(const th_server *s)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)s->pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

int th_server_alive(th_server *s)
{
    if (s->pid <= 0)
        return 0;
    int st;
    if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
        s->pid = 0;
        return 0;
    }
    return 1;
}

int th_server_log_count(const th_server *s, const char *needle)
{
    size_t len;
    char *log = th_read_file(s->log_path, &len);
    int n = 0;
    for (const char *p = strstr(log, needle); p; p = strstr(p + 1, needle))
        n++;
    free(log);
    return n;
}

static void loopback(const th_server *s, struct sockaddr_in *a)
{
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)s->port);
    inet_pton(AF_INET, "127.0.0.1", &a->sin_addr);
}

int th_connect(const th_server *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    struct sockaddr_in a;
    loopback(s, &a);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect to port %d: %s", s->port,
                 strerror(errno));
    return fd;
}

int th_connect_nb(const th_server *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in a;
    loopback(s, &a);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int th_send(int fd, const void *data, size_t len, int timeout_ms)
{
    const char *p = data;
    double t0 = th_now_s();
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -errno;
        int left = timeout_ms - (int)((th_now_s() - t0) * 1000);
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        poll(&pf, 1, left);
    }
    return 0;
}

int th_split_responses(const char *data, size_t len, th_http_msg *out, int cap)
{
    int n = 0;
    size_t off = 0;
    while ((!out || n < cap) && off < len) {
        const char *p = data + off, *end = memmem(p, len - off, "\r\n\r\n", 4);
        if (!end || strncmp(p, "HTTP/1.", 7) != 0)
            break;
        th_http_msg m = {.head = p, .head_len = (size_t)(end - p)};
        if (sscanf(p, "HTTP/1.%*d %d", &m.status) != 1)
            break;
        char cl[32];
        if (!th_msg_header(&m, "Content-Length", cl, sizeof cl))
            break;
        m.body = end + 4;
        m.body_len = strtoul(cl, NULL, 10);
        if (m.body_len > len - (size_t)(m.body - data))
            break;
        if (out)
            out[n] = m;
        n++;
        off = (size_t)(m.body - data) + m.body_len;
    }
    return n;
}

int th_msg_header(const th_http_msg *m, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *end = m->head + m->head_len;
    for (const char *line = memmem(m->head, m->head_len, "\r\n", 2); line && line < end;) {
        line += 2;
        const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!eol)
            eol = end;
        if ((size_t)(eol - line) > nl && !strncasecmp(line, name, nl) && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            snprintf(out, cap, "%.*s", (int)(eol - v), v);
            return 1;
        }
        line = eol < end ? eol : NULL;
    }
    return 0;
}

void th_read(int fd, int timeout_ms, int responses, th_raw_result *r)
{
    size_t cap = 1 << 16;
    memset(r, 0, sizeof *r);
    r->data = malloc(cap + 1);
    cr_assert_not_null(r->data);
    r->data[0] = 0;
    double t0 = th_now_s();
    for (;;) {
        int left = timeout_ms - (int)((th_now_s() - t0) * 1000);
        if (left <= 0)
            break;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int pr = poll(&pf, 1, left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            break;
        if (r->len == cap) {
            cap *= 2;
            r->data = realloc(r->data, cap + 1);
            cr_assert_not_null(r->data);
        }
        ssize_t n = recv(fd, r->data + r->len, cap - r->len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0) {
            r->closed = 1; /* EOF, or reset */
            break;
        }
        r->len += (size_t)n;
        r->data[r->len] = 0;
        if (responses > 0 && th_split_responses(r->data, r->len, NULL, 0) >= responses)
            break;
    }
}
