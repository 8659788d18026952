/* The event loop and the wire.
 *
 * Frame: "PVF1" | u32 BE header length | u32 BE payload length | JSON header | payload bytes.
 * A header with an "id" is a request and gets exactly one Response with that id; a header without one
 * is a notification (Input, CloseInput, CancelStream). Events the agent sends on its own carry a
 * "stream" (Output, End) or are broadcasts (ContainerExit).
 *
 * virtio-serial tells the guest when the host side connects and disconnects. While nobody is connected
 * the port polls as readable-at-EOF forever, so the agent then leaves it out of poll(2) and checks it
 * every 5 ms for about two seconds (a restored template, a restarting hostd), then every 50 ms (a VM
 * whose host agent is down should not burn emulated CPU). The count is of polls, not of time: a
 * restored template's clock has jumped. A disconnect drops every stream and pending wait: the host starts
 * over with Hello. Nothing is written before a Hello, so a new host never reads a stale reply.
 */
#include "pv.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_WATCHES 512
#define LATER_IDLE_MS 200 /* how long the agent must be idle before deferred console lines go out */

static watch *watches[MAX_WATCHES];
static int nwatches;
static int port_fd = -1;
static int connected, greeted, idle_polls;
static sb rbuf;
int loop_keep_request;

void watch_add(watch *w)
{
    if (w->registered) return;
    if (nwatches >= MAX_WATCHES) { logmsg("too many watches"); return; }
    watches[nwatches++] = w;
    w->registered = 1;
}

void watch_del(watch *w)
{
    if (!w->registered) return;
    for (int i = 0; i < nwatches; i++)
        if (watches[i] == w) {
            watches[i] = watches[--nwatches];
            break;
        }
    w->registered = 0;
}

int host_connected(void) { return connected && greeted; }

static void mark_disconnected(void)
{
    if (connected) logmsg("host disconnected");
    connected = 0;
    greeted = 0;
    sb_free(&rbuf);
    streams_drop_all();
    containers_drop_waiters();
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd pf = {fd, POLLOUT, 0};
                poll(&pf, 1, 100);
                continue;
            }
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

void send_frame(const char *hdr, size_t hlen, const void *payload, size_t plen)
{
    if (!connected || !greeted) return;
    unsigned char head[12];
    memcpy(head, PV_MAGIC, 4);
    uint32_t h = (uint32_t)hlen, p = (uint32_t)plen;
    head[4] = (unsigned char)(h >> 24); head[5] = (unsigned char)(h >> 16); head[6] = (unsigned char)(h >> 8); head[7] = (unsigned char)h;
    head[8] = (unsigned char)(p >> 24); head[9] = (unsigned char)(p >> 16); head[10] = (unsigned char)(p >> 8); head[11] = (unsigned char)p;
    /* One buffer, one write: a frame never interleaves with another. */
    sb out = {0};
    sb_add(&out, head, 12);
    sb_add(&out, hdr, hlen);
    if (plen) sb_add(&out, payload, plen);
    if (write_all(port_fd, out.b, out.n) < 0) mark_disconnected();
    sb_free(&out);
}

void reply_ok(uint64_t id, const char *members)
{
    sb h = {0};
    sb_printf(&h, "{\"type\":\"Response\",\"id\":%llu,\"ok\":true%s%s}", (unsigned long long)id,
              members && *members ? "," : "", members ? members : "");
    send_frame(h.b, h.n, NULL, 0);
    sb_free(&h);
}

void reply_err(uint64_t id, const char *code, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sb h = {0};
    sb_printf(&h, "{\"type\":\"Response\",\"id\":%llu,\"ok\":false,\"error\":{\"code\":", (unsigned long long)id);
    sb_jstr(&h, code);
    sb_puts(&h, ",\"message\":");
    sb_jstr(&h, msg);
    sb_puts(&h, "}}");
    send_frame(h.b, h.n, NULL, 0);
    sb_free(&h);
}

void send_event(sb *hdr, const void *payload, size_t plen)
{
    sb h = {0};
    sb_puts(&h, "{");
    sb_add(&h, hdr->b, hdr->n);
    sb_puts(&h, "}");
    send_frame(h.b, h.n, payload, plen);
    sb_free(&h);
    sb_free(hdr);
}

static void dispatch(jnode *req, const unsigned char *payload, size_t plen)
{
    const char *type = jgets(req, "type");
    uint64_t id = (uint64_t)jgeti(req, "id", 0);
    if (!type) { if (id) reply_err(id, "InvalidArgument", "missing type"); return; }
    if (!strcmp(type, "Hello")) { greeted = 1; h_hello(id, req, payload, plen); return; }
    if (!greeted) return; /* a host must say Hello first */
    if (!strcmp(type, "Input")) { stream_input(jgets(req, "stream"), payload, plen); return; }
    if (!strcmp(type, "CloseInput")) { stream_close_input(jgets(req, "stream")); return; }
    if (!strcmp(type, "CancelStream")) { stream_cancel(jgets(req, "stream")); return; }
    if (!id) return;
    if (!strcmp(type, "SetupSandbox")) h_setup_sandbox(id, req);
    else if (!strcmp(type, "AttachDisk")) h_attach_disk(id, req);
    else if (!strcmp(type, "CreateVolume")) h_create_volume(id, req);
    else if (!strcmp(type, "WriteFile")) h_write_file(id, req, payload, plen);
    else if (!strcmp(type, "RemovePath")) h_remove_path(id, req);
    else if (!strcmp(type, "CreateContainer")) h_create_container(id, req);
    else if (!strcmp(type, "StartContainer")) h_start_container(id, req);
    else if (!strcmp(type, "SignalContainer")) h_signal_container(id, req);
    else if (!strcmp(type, "WaitContainer")) h_wait_container(id, req);
    else if (!strcmp(type, "RemoveContainer")) h_remove_container(id, req);
    else if (!strcmp(type, "ListContainers")) h_list_containers(id, req);
    else if (!strcmp(type, "Exec")) h_exec(id, req);
    else if (!strcmp(type, "SignalExec")) h_signal_exec(id, req);
    else if (!strcmp(type, "Resize")) h_resize(id, req);
    else if (!strcmp(type, "PortForward")) h_port_forward(id, req);
    else if (!strcmp(type, "ReadLog")) h_read_log(id, req);
    else if (!strcmp(type, "Attach")) h_attach(id, req);
    else if (!strcmp(type, "Stats")) h_stats(id, req);
    else if (!strcmp(type, "Ping")) reply_ok(id, "");
    else if (!strcmp(type, "Shutdown")) h_shutdown(id, req);
    else if (!strcmp(type, "PrepareTemplate")) h_prepare_template(id, req);
    else reply_err(id, "Unimplemented", "unknown request type %s", type);
}

static void handle_input(void)
{
    for (;;) {
        if (rbuf.n < 12) return;
        if (memcmp(rbuf.b, PV_MAGIC, 4)) {
            /* resynchronise on the next magic */
            char *m = memmem(rbuf.b + 1, rbuf.n - 1, PV_MAGIC, 4);
            size_t drop = m ? (size_t)(m - rbuf.b) : rbuf.n - 3;
            memmove(rbuf.b, rbuf.b + drop, rbuf.n - drop);
            rbuf.n -= drop;
            continue;
        }
        const unsigned char *u = (const unsigned char *)rbuf.b;
        uint32_t hl = (uint32_t)u[4] << 24 | (uint32_t)u[5] << 16 | (uint32_t)u[6] << 8 | u[7];
        uint32_t pl = (uint32_t)u[8] << 24 | (uint32_t)u[9] << 16 | (uint32_t)u[10] << 8 | u[11];
        if (hl > PV_MAX_HEADER || pl > PV_MAX_PAYLOAD) {
            logmsg("oversized frame (%u, %u): resynchronising", hl, pl);
            memmove(rbuf.b, rbuf.b + 4, rbuf.n - 4);
            rbuf.n -= 4;
            continue;
        }
        size_t total = 12 + (size_t)hl + pl;
        if (rbuf.n < total) return;
        jnode *req = json_parse(rbuf.b + 12, hl);
        if (req) {
            loop_keep_request = 0;
            long long t0 = pv_debug ? now_boottime_ms() : 0;
            dispatch(req, (const unsigned char *)rbuf.b + 12 + hl, pl);
            if (pv_debug && !loop_keep_request) logmsg("%s took %lld ms", jgets(req, "type") ? jgets(req, "type") : "?", now_boottime_ms() - t0);
            if (!loop_keep_request) json_free(req);
        } else {
            logmsg("unparsable header dropped");
        }
        if (!rbuf.b) return; /* dispatch may have dropped the connection */
        memmove(rbuf.b, rbuf.b + total, rbuf.n - total);
        rbuf.n -= total;
    }
}

static void on_port(short revents)
{
    if (revents & POLLIN) {
        char buf[65536];
        ssize_t r = read(port_fd, buf, sizeof(buf));
        if (r > 0) {
            sb_add(&rbuf, buf, (size_t)r);
            handle_input();
            return;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        mark_disconnected();
        return;
    }
    if (revents & (POLLHUP | POLLERR)) mark_disconnected();
}

static void on_sigchld(int sfd)
{
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) { }
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        if (container_reap(pid, status)) continue;
        stream_reap(pid, status);
    }
}

void loop_run(int fd)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    port_fd = fd;
    set_nonblock(port_fd, 1);
    struct pollfd pfds[MAX_WATCHES + 2];
    watch *order[MAX_WATCHES];
    for (;;) {
        if (!connected) {
            struct pollfd pf = {port_fd, POLLIN, 0};
            if (poll(&pf, 1, 0) >= 0 && !(pf.revents & (POLLHUP | POLLERR))) {
                connected = 1;
                idle_polls = 0;
                logmsg_later("host connected");
            }
        }
        int n = 0;
        pfds[n++] = (struct pollfd){sfd, POLLIN, 0};
        int port_slot = -1;
        if (connected) { port_slot = n; pfds[n++] = (struct pollfd){port_fd, POLLIN, 0}; }
        int base = n, count = nwatches;
        for (int i = 0; i < count; i++) {
            order[i] = watches[i];
            pfds[n++] = (struct pollfd){watches[i]->fd, watches[i]->events, 0};
        }
        int timeout = connected ? -1 : idle_polls++ < 400 ? 5 : 50;
        if (logmsg_pending() && (timeout < 0 || timeout > LATER_IDLE_MS)) timeout = LATER_IDLE_MS;
        int r = poll(pfds, (nfds_t)n, timeout);
        if (r < 0) {
            if (errno != EINTR) logmsg("poll: %s", strerror(errno));
            continue;
        }
        if (r == 0 && logmsg_pending()) logmsg_flush();
        if (pfds[0].revents) on_sigchld(sfd);
        if (port_slot >= 0 && pfds[port_slot].revents) on_port(pfds[port_slot].revents);
        for (int i = 0; i < count; i++) {
            if (!pfds[base + i].revents) continue;
            watch *w = order[i];
            /* a callback may have removed this watch (or one after it) meanwhile */
            int still = 0;
            for (int k = 0; k < nwatches; k++) if (watches[k] == w) { still = 1; break; }
            if (still && w->fd == pfds[base + i].fd) w->cb(w, pfds[base + i].revents);
        }
    }
}
