/* Small helpers: logging to the serial console, clocks, files and paths. */
#include "pv.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static int format_line(char *buf, size_t cap, const char *fmt, va_list ap)
{
    int n = snprintf(buf, cap, "pv-agent[%lld]: ", now_boottime_ms());
    n += vsnprintf(buf + n, cap - (size_t)n - 2, fmt, ap);
    if (n > (int)cap - 2) n = (int)cap - 2;
    buf[n++] = '\n';
    return n;
}

void logmsg(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = format_line(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (write(2, buf, (size_t)n) < 0) { /* nowhere else to say it */ }
}

/* Lines for the console that nobody waits for (boot progress): written once the agent has been idle for a
 * moment, so that a cold boot's first container does not wait for the emulated UART. */
static char later[2048];
static size_t later_n;

void logmsg_later(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = format_line(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (later_n + (size_t)n > sizeof(later)) logmsg_flush();
    memcpy(later + later_n, buf, (size_t)n);
    later_n += (size_t)n;
}

int logmsg_pending(void) { return later_n > 0; }

void logmsg_flush(void)
{
    if (later_n && write(2, later, later_n) < 0) { }
    later_n = 0;
}

long long now_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

long long now_boottime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int mkdir_p(const char *path, mode_t mode)
{
    char tmp[1024];
    size_t n = strlen(path);
    if (n >= sizeof(tmp)) { errno = ENAMETOOLONG; return -1; }
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, mode) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, mode) && errno != EEXIST) return -1;
    return 0;
}

int write_file(const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    size_t n = strlen(data);
    ssize_t w = write(fd, data, n);
    int saved = errno;
    close(fd);
    errno = saved;
    return w == (ssize_t)n ? 0 : -1;
}

int read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t total = 0, r;
    while ((size_t)total < cap - 1 && (r = read(fd, buf + total, cap - 1 - (size_t)total)) > 0) total += r;
    close(fd);
    buf[total] = 0;
    return (int)total;
}

long long read_ll(const char *path, const char *key)
{
    char buf[4096];
    if (read_file(path, buf, sizeof(buf)) < 0) return -1;
    if (!key) return strtoll(buf, NULL, 10);
    size_t kl = strlen(key);
    for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (!strncmp(line, key, kl) && (line[kl] == ' ' || line[kl] == ':'))
            return strtoll(line + kl + 1 + strspn(line + kl + 1, " :"), NULL, 10);
    }
    return -1;
}

int rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st)) return errno == ENOENT ? 0 : -1;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return -1;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[1024];
            snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
            rm_rf(sub);
        }
        closedir(d);
        return rmdir(path);
    }
    return unlink(path);
}

/* root + "/" + rel, refusing absolute-escaping or ".." components. */
int safe_join(char *out, size_t cap, const char *root, const char *rel)
{
    while (*rel == '/') rel++;
    const char *p = rel;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if ((n == 2 && !strncmp(p, "..", 2))) { errno = EINVAL; return -1; }
        if (!slash) break;
        p = slash + 1;
    }
    int n = snprintf(out, cap, "%s%s%s", root, *rel ? "/" : "", rel);
    if (n < 0 || (size_t)n >= cap) { errno = ENAMETOOLONG; return -1; }
    return 0;
}

void rfc3339nano(char *out, size_t cap, long long ns)
{
    time_t secs = (time_t)(ns / 1000000000LL);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, ns % 1000000000LL);
}

int set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return -1;
    return fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}
