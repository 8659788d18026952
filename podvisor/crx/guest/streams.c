/* Streams: byte channels between the host and something in the guest, named by a host-chosen id.
 *
 *   exec          a process in a container (stdin/stdout/stderr, or one pty with resize)
 *   port-forward  a TCP connection to 127.0.0.1:PORT inside the pod's network namespace
 *   log           a container's CRI log file from an offset, then (follow) every new line
 *   attach        a container's own output as it is produced, and its stdin (if it asked for one)
 *
 * Data to the host is an Output event {stream, fd} with the bytes as payload; the end is one End event
 * (with exitCode for exec). Data from the host is an Input notification; CloseInput half-closes.
 * Writes into the guest never block the loop: what a process does not read yet waits in a buffer.
 */
#include "pv.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pty.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

enum { S_EXEC = 1, S_PORT, S_LOG, S_ATTACH };

typedef struct stream {
    char id[128];
    int kind;
    pid_t pid;
    int in_fd, out_fd, err_fd, tty;
    watch wout, werr, win;
    sb inbuf;
    int close_in_pending;
    int borrowed_in; /* in_fd belongs to the container (attach) */
    container *c;
    struct stream *next;
} stream;

static stream *streams;
static int self_pidns = -1;

static stream *find_stream(const char *sid)
{
    if (!sid) return NULL;
    for (stream *s = streams; s; s = s->next)
        if (!strcmp(s->id, sid)) return s;
    return NULL;
}

static void send_output(stream *s, int fd, const void *data, size_t n)
{
    sb h = {0};
    sb_puts(&h, "\"type\":\"Output\",\"stream\":");
    sb_jstr(&h, s->id);
    sb_printf(&h, ",\"fd\":%d", fd);
    send_event(&h, data, n);
}

static void stream_free(stream *s)
{
    for (stream **pp = &streams; *pp; pp = &(*pp)->next)
        if (*pp == s) { *pp = s->next; break; }
    watch_del(&s->wout);
    watch_del(&s->werr);
    watch_del(&s->win);
    if (s->out_fd >= 0) close(s->out_fd);
    if (s->err_fd >= 0) close(s->err_fd);
    if (s->in_fd >= 0 && s->in_fd != s->out_fd && !s->borrowed_in) close(s->in_fd);
    sb_free(&s->inbuf);
    free(s);
}

static void stream_end(stream *s, int with_code, int code)
{
    sb h = {0};
    sb_puts(&h, "\"type\":\"End\",\"stream\":");
    sb_jstr(&h, s->id);
    if (with_code) sb_printf(&h, ",\"exitCode\":%d", code);
    send_event(&h, NULL, 0);
    stream_free(s);
}

static int read_once(stream *s, int fd, int which)
{
    char buf[32768];
    ssize_t r = read(fd, buf, sizeof(buf));
    if (r > 0) { send_output(s, which, buf, (size_t)r); return 1; }
    if (r < 0 && errno == EAGAIN) return 0;
    return -1; /* EOF, or EIO on a pty whose slave side is gone */
}

static void on_stream_out(watch *w, short revents)
{
    stream *s = w->ctx;
    (void)revents;
    int which = w == &s->werr ? 2 : 1;
    if (read_once(s, w->fd, which) >= 0) return;
    watch_del(w);
    if (s->kind == S_PORT) stream_end(s, 0, 0);
    /* exec: the End comes with the exit status from the reap */
}

static void on_stream_in(watch *w, short revents);

static void flush_input_now(stream *s)
{
    while (s->inbuf.n) {
        ssize_t w = write(s->in_fd, s->inbuf.b, s->inbuf.n);
        if (w <= 0) break;
        memmove(s->inbuf.b, s->inbuf.b + w, s->inbuf.n - (size_t)w);
        s->inbuf.n -= (size_t)w;
    }
    s->inbuf.n = 0;
}

static void flush_input(stream *s)
{
    while (s->inbuf.n) {
        ssize_t w = write(s->in_fd, s->inbuf.b, s->inbuf.n);
        if (w < 0) {
            if (errno == EAGAIN) break;
            s->inbuf.n = 0; /* the reader is gone: drop what is left */
            break;
        }
        memmove(s->inbuf.b, s->inbuf.b + w, s->inbuf.n - (size_t)w);
        s->inbuf.n -= (size_t)w;
    }
    if (s->inbuf.n) {
        if (!s->win.registered) {
            s->win = (watch){s->in_fd, POLLOUT, on_stream_in, s, 0};
            watch_add(&s->win);
        }
        return;
    }
    watch_del(&s->win);
    if (s->close_in_pending) {
        s->close_in_pending = 0;
        if (s->kind == S_PORT) shutdown(s->in_fd, SHUT_WR);
        else if (s->borrowed_in && s->c) {
            /* stdinOnce: the attached caller closing stdin closes the container's; without it the
             * container's stdin stays open for the next attach and only this session stops writing */
            if (jgetb(s->c->spec, "stdinOnce", 0)) container_close_stdin(s->c);
            else { watch_del(&s->win); s->in_fd = -1; }
        } else if (s->tty) { if (write(s->in_fd, "\x04", 1) < 0) { } }
        else { close(s->in_fd); s->in_fd = -1; }
    }
}

static void on_stream_in(watch *w, short revents)
{
    (void)revents;
    flush_input(w->ctx);
}

void stream_input(const char *sid, const void *data, size_t n)
{
    stream *s = find_stream(sid);
    if (!s || s->in_fd < 0 || !n) return;
    sb_add(&s->inbuf, data, n);
    flush_input(s);
}

void stream_close_input(const char *sid)
{
    stream *s = find_stream(sid);
    if (!s || s->in_fd < 0) return;
    s->close_in_pending = 1;
    flush_input(s);
}

/* The container's stdin ends (stdinOnce): a pipe is closed, a terminal gets an end-of-file (^D), and
 * no attach session writes to it any more. */
void container_close_stdin(container *c)
{
    if (c->in_fd < 0) return;
    for (stream *s = streams; s; s = s->next) {
        if (s->kind != S_ATTACH || s->c != c || !s->borrowed_in || s->in_fd < 0) continue;
        flush_input_now(s);
        watch_del(&s->win);
        s->in_fd = -1;
    }
    if (c->tty) { if (write(c->in_fd, "\x04", 1) < 0) { } }
    close(c->in_fd);
    c->in_fd = -1;
}

void stream_cancel(const char *sid)
{
    stream *s = find_stream(sid);
    if (!s) return;
    /* stdinOnce: the first attach session with stdin ending (the caller went away) ends it too */
    if (s->kind == S_ATTACH && s->borrowed_in && s->in_fd >= 0 && s->c && jgetb(s->c->spec, "stdinOnce", 0))
        container_close_stdin(s->c);
    if (s->kind == S_EXEC && s->pid > 0) kill(s->pid, SIGKILL);
    stream_free(s); /* the reap of a cancelled exec finds no stream and is ignored */
}

void streams_drop_all(void)
{
    while (streams) stream_cancel(streams->id);
}

int stream_reap(pid_t pid, int status)
{
    for (stream *s = streams; s; s = s->next) {
        if (s->kind != S_EXEC || s->pid != pid) continue;
        if (s->out_fd >= 0) while (read_once(s, s->out_fd, 1) > 0) { }
        if (s->err_fd >= 0) while (read_once(s, s->err_fd, 2) > 0) { }
        stream_end(s, 1, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        return 1;
    }
    return 0;
}

void streams_log_data(container *c, const char *data, size_t n)
{
    for (stream *s = streams; s; s = s->next)
        if (s->kind == S_LOG && s->c == c) send_output(s, 1, data, n);
}

void streams_attach_data(container *c, int is_err, const char *data, size_t n)
{
    for (stream *s = streams; s; s = s->next)
        if (s->kind == S_ATTACH && s->c == c) send_output(s, is_err ? 2 : 1, data, n);
}

void streams_log_end(container *c)
{
    stream *s = streams;
    while (s) {
        stream *next = s->next;
        if ((s->kind == S_LOG || s->kind == S_ATTACH) && s->c == c) stream_end(s, 0, 0);
        s = next;
    }
}

/* A pty from the container's own devpts instance, so the process sees /dev/pts/N inside its root
 * (ttyname, `tty`); TIOCGPTPEER opens the slave without a path lookup. Falls back to the guest's. */
static int open_container_pty(container *c, int *master, int *slave, struct winsize *ws)
{
    char p[128];
    snprintf(p, sizeof(p), "/run/containers/%s/pts/ptmx", c->id);
    int m = open(p, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m >= 0) {
        int unlock = 0;
        int sl = ioctl(m, TIOCSPTLCK, &unlock) ? -1 : ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY);
        if (sl >= 0) {
            ioctl(m, TIOCSWINSZ, ws);
            *master = m;
            *slave = sl;
            return 0;
        }
        close(m);
    }
    if (openpty(master, slave, NULL, NULL, ws)) return -1;
    fcntl(*master, F_SETFD, FD_CLOEXEC);
    return 0;
}

static stream *new_stream(uint64_t id, jnode *req, int kind)
{
    const char *sid = jgets(req, "stream");
    if (!sid || !*sid || strlen(sid) >= sizeof(((stream *)0)->id)) { reply_err(id, "InvalidArgument", "a stream id is required"); return NULL; }
    if (find_stream(sid)) { reply_err(id, "AlreadyExists", "stream %s is open", sid); return NULL; }
    stream *s = calloc(1, sizeof(*s));
    snprintf(s->id, sizeof(s->id), "%s", sid);
    s->kind = kind;
    s->in_fd = s->out_fd = s->err_fd = -1;
    return s;
}

static void link_stream(stream *s)
{
    s->next = streams;
    streams = s;
    if (s->out_fd >= 0) { set_nonblock(s->out_fd, 1); s->wout = (watch){s->out_fd, POLLIN, on_stream_out, s, 0}; watch_add(&s->wout); }
    if (s->err_fd >= 0) { set_nonblock(s->err_fd, 1); s->werr = (watch){s->err_fd, POLLIN, on_stream_out, s, 0}; watch_add(&s->werr); }
    if (s->in_fd >= 0) set_nonblock(s->in_fd, 1);
}

void h_exec(uint64_t id, jnode *req)
{
    container *c = container_find(jgets(req, "containerId"));
    if (!c) { reply_err(id, "NotFound", "no container %s", jgets(req, "containerId") ? jgets(req, "containerId") : ""); return; }
    if (c->state != 1 || c->mntns_fd < 0 || c->pidns_fd < 0) { reply_err(id, "FailedPrecondition", "container %s is not running", c->id); return; }
    char **args = jstrv(jget(req, "args"));
    if (!args || !args[0]) { free(args); reply_err(id, "InvalidArgument", "args must name the program to run"); return; }
    stream *s = new_stream(id, req, S_EXEC);
    if (!s) { free(args); return; }
    if (self_pidns < 0) self_pidns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
    int ep[2], outp[2] = {-1, -1}, errp[2] = {-1, -1}, inp[2] = {-1, -1}, master = -1, slave = -1;
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    s->tty = jgetb(req, "tty", 0);
    pipe2(ep, O_CLOEXEC);
    if (s->tty) {
        struct winsize ws = {(unsigned short)jgeti(req, "rows", 24), (unsigned short)jgeti(req, "cols", 80), 0, 0};
        if (open_container_pty(c, &master, &slave, &ws)) { reply_err(id, "Internal", "pty: %s", strerror(errno)); goto fail; }
    } else {
        if (pipe2(outp, O_CLOEXEC) || pipe2(errp, O_CLOEXEC)) { reply_err(id, "Internal", "pipe: %s", strerror(errno)); goto fail; }
        if (jgetb(req, "stdin", 0) && pipe2(inp, O_CLOEXEC)) { reply_err(id, "Internal", "pipe: %s", strerror(errno)); goto fail; }
    }
    if (setns(c->pidns_fd, CLONE_NEWPID)) { reply_err(id, "Internal", "enter PID namespace: %s", strerror(errno)); goto fail; }
    pid_t pid = fork();
    if (pid == 0) {
        close(ep[0]);
        char **env = jget(req, "env") ? jstrv(jget(req, "env")) : jstrv(jget(c->spec, "env"));
        exec_in_container(c, ep[1], inp[0] >= 0 ? inp[0] : devnull, outp[1], errp[1], slave, args, env,
                          jgets(req, "workingDir"), jget(req, "user"));
        _exit(127);
    }
    if (setns(self_pidns, CLONE_NEWPID)) logmsg("back to own PID namespace: %s", strerror(errno));
    if (pid < 0) { reply_err(id, "Internal", "fork: %s", strerror(errno)); goto fail; }
    close(ep[1]);
    ep[1] = -1;
    if (slave >= 0) close(slave);
    if (outp[1] >= 0) close(outp[1]);
    if (errp[1] >= 0) close(errp[1]);
    if (inp[0] >= 0) close(inp[0]);
    close(devnull);
    s->pid = pid;
    if (s->tty) { s->out_fd = master; s->in_fd = dup(master); fcntl(s->in_fd, F_SETFD, FD_CLOEXEC); }
    else { s->out_fd = outp[0]; s->err_fd = errp[0]; s->in_fd = inp[1]; }
    char msg[512];
    ssize_t r = read(ep[0], msg, sizeof(msg) - 1);
    close(ep[0]);
    free(args);
    if (r > 0) {
        msg[r] = 0;
        reply_err(id, "StartError", "%s", msg);
        s->pid = 0;
        s->next = NULL;
        stream_free(s); /* not linked yet: stream_free's unlink finds nothing */
        return;
    }
    link_stream(s);
    sb o = {0};
    sb_printf(&o, "\"pid\":%d", (int)pid);
    reply_ok(id, o.b);
    sb_free(&o);
    return;
fail:
    free(args);
    close(ep[0]);
    close(ep[1]);
    close(devnull);
    int fds[] = {outp[0], outp[1], errp[0], errp[1], inp[0], inp[1], master, slave};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) if (fds[i] >= 0) close(fds[i]);
    free(s);
}

void h_signal_exec(uint64_t id, jnode *req)
{
    stream *s = find_stream(jgets(req, "stream"));
    if (!s || s->kind != S_EXEC) { reply_err(id, "NotFound", "no exec stream %s", jgets(req, "stream") ? jgets(req, "stream") : ""); return; }
    kill(s->pid, (int)jgeti(req, "signal", SIGTERM));
    reply_ok(id, "");
}

void h_resize(uint64_t id, jnode *req)
{
    int fd = -1;
    stream *s = find_stream(jgets(req, "stream"));
    if (s && s->kind == S_ATTACH) { if (s->c && s->c->tty) fd = s->c->out_fd; }
    else if (s && s->tty) fd = s->out_fd;
    container *c = s ? NULL : container_find(jgets(req, "containerId"));
    if (c && c->tty) fd = c->out_fd;
    if (fd < 0) { reply_err(id, "NotFound", "no terminal to resize"); return; }
    struct winsize ws = {(unsigned short)jgeti(req, "rows", 24), (unsigned short)jgeti(req, "cols", 80), 0, 0};
    if (ioctl(fd, TIOCSWINSZ, &ws)) { reply_err(id, "Internal", "resize: %s", strerror(errno)); return; }
    reply_ok(id, "");
}

void h_port_forward(uint64_t id, jnode *req)
{
    long long port = jgeti(req, "port", 0);
    if (port <= 0 || port > 65535) { reply_err(id, "InvalidArgument", "port must be 1-65535"); return; }
    stream *s = new_stream(id, req, S_PORT);
    if (!s) return;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        reply_err(id, "Unavailable", "failed to connect to localhost:%lld inside the pod: %s", port, strerror(errno));
        if (fd >= 0) close(fd);
        free(s);
        return;
    }
    s->out_fd = s->in_fd = fd;
    link_stream(s);
    reply_ok(id, "");
}

void h_read_log(uint64_t id, jnode *req)
{
    container *c = container_find(jgets(req, "containerId"));
    const char *rel = jgets(req, "path");
    char path[600];
    if (c) snprintf(path, sizeof(path), "%s", c->log_path);
    else if (!rel || safe_join(path, sizeof(path), pod_root, rel)) {
        reply_err(id, "NotFound", "no container %s and no log path", jgets(req, "containerId") ? jgets(req, "containerId") : "");
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { reply_err(id, "NotFound", "log %s: %s", path, strerror(errno)); return; }
    stream *s = new_stream(id, req, S_LOG);
    if (!s) { close(fd); return; }
    long long off = jgeti(req, "offset", 0);
    if (off > 0) lseek(fd, off, SEEK_SET);
    reply_ok(id, "");
    s->next = streams; /* linked so send_output can name it; no fds watched */
    streams = s;
    char buf[65536];
    ssize_t r;
    while ((r = read(fd, buf, sizeof(buf))) > 0) send_output(s, 1, buf, (size_t)r);
    close(fd);
    if (jgetb(req, "follow", 0) && c && c->state != 2) s->c = c;
    else stream_end(s, 0, 0);
}

void h_attach(uint64_t id, jnode *req)
{
    container *c = container_find(jgets(req, "containerId"));
    if (!c) { reply_err(id, "NotFound", "no container %s", jgets(req, "containerId") ? jgets(req, "containerId") : ""); return; }
    if (c->state == 2) { reply_err(id, "FailedPrecondition", "container %s has exited", c->id); return; }
    stream *s = new_stream(id, req, S_ATTACH);
    if (!s) return;
    s->c = c;
    s->tty = c->tty;
    if (jgetb(req, "stdin", 0) && c->in_fd >= 0) { s->in_fd = c->in_fd; s->borrowed_in = 1; }
    if (c->tty && (jget(req, "rows") || jget(req, "cols"))) {
        struct winsize ws = {(unsigned short)jgeti(req, "rows", 24), (unsigned short)jgeti(req, "cols", 80), 0, 0};
        if (c->out_fd >= 0) ioctl(c->out_fd, TIOCSWINSZ, &ws);
    }
    s->next = streams;
    streams = s;
    reply_ok(id, "");
}
