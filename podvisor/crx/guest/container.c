/* Containers: create (prepare the root), start (clone into new mount and PID namespaces, join a cgroup,
 * pivot into an overlay of the read-only image disk and a writable layer on the ephemeral disk), signal,
 * wait, remove, stats. Output goes to a CRI-format log file on the ephemeral disk and to log followers.
 *
 * Containers of one pod share the VM's network, IPC and UTS namespaces; each has its own mount and PID
 * namespace, like a pod on a kubelet. The writable layer lives on the ephemeral disk so a container's
 * files survive a restart of the agent's view but go away with the pod.
 */
#include "pv.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pty.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>

extern int loop_keep_request;
container *containers;

container *container_find(const char *id)
{
    if (!id) return NULL;
    for (container *c = containers; c; c = c->next)
        if (!strcmp(c->id, id)) return c;
    return NULL;
}

static const char *state_name(int s) { return s == 0 ? "created" : s == 1 ? "running" : "exited"; }

void container_status_json(sb *o, container *c)
{
    sb_puts(o, "{\"containerId\":");
    sb_jstr(o, c->id);
    sb_puts(o, ",\"name\":");
    sb_jstr(o, c->name);
    sb_printf(o, ",\"state\":\"%s\",\"pid\":%d,\"exitCode\":%d,\"oomKilled\":%s,\"reason\":", state_name(c->state),
              (int)c->pid, c->exit_code, c->oom ? "true" : "false");
    sb_jstr(o, c->reason);
    sb_puts(o, ",\"message\":");
    sb_jstr(o, c->message);
    sb_printf(o, ",\"createdAt\":%lld,\"startedAt\":%lld,\"finishedAt\":%lld,\"logPath\":", c->created_ns,
              c->started_ns, c->finished_ns);
    sb_jstr(o, c->log_path + strlen(pod_root) + (c->log_path[strlen(pod_root)] == '/'));
    sb_puts(o, "}");
}

void containers_status_json(sb *o)
{
    sb_puts(o, "[");
    for (container *c = containers; c; c = c->next) {
        container_status_json(o, c);
        if (c->next) sb_puts(o, ",");
    }
    sb_puts(o, "]");
}

/* ---- output: CRI log lines ---- */

static void emit_line(container *c, const char *stream, const char *tag, const char *data, size_t n)
{
    char ts[48];
    rfc3339nano(ts, sizeof(ts), now_realtime_ns());
    sb line = {0};
    sb_printf(&line, "%s %s %s ", ts, stream, tag);
    sb_add(&line, data, n);
    sb_add(&line, "\n", 1);
    if (c->log_fd >= 0 && write(c->log_fd, line.b, line.n) < 0) logmsg("log write %s: %s", c->id, strerror(errno));
    streams_log_data(c, line.b, line.n);
    sb_free(&line);
}

static void take_output(container *c, int is_err, const char *data, size_t n, int final)
{
    sb *p = is_err ? &c->pend_err : &c->pend_out;
    const char *stream = is_err ? "stderr" : "stdout";
    sb_add(p, data, n);
    size_t start = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (p->b[i] != '\n') continue;
        size_t end = i;
        if (end > start && p->b[end - 1] == '\r' && c->tty) end--;
        emit_line(c, stream, "F", p->b + start, end - start);
        start = i + 1;
    }
    while (p->n - start >= 16384) {
        emit_line(c, stream, "P", p->b + start, 16384);
        start += 16384;
    }
    if (final && p->n > start) { emit_line(c, stream, "F", p->b + start, p->n - start); start = p->n; }
    if (start) {
        memmove(p->b, p->b + start, p->n - start);
        p->n -= start;
    }
    if (final) sb_free(p);
}

static void drain_fd(container *c, int fd, int is_err, int final)
{
    char buf[16384];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r > 0) { streams_attach_data(c, is_err, buf, (size_t)r); take_output(c, is_err, buf, (size_t)r, 0); continue; }
        break;
    }
    if (final) take_output(c, is_err, "", 0, 1);
}

static void on_output(watch *w, short revents)
{
    container *c = w->ctx;
    int is_err = w == &c->werr;
    char buf[16384];
    ssize_t r = read(w->fd, buf, sizeof(buf));
    if (r > 0) { streams_attach_data(c, is_err, buf, (size_t)r); take_output(c, is_err, buf, (size_t)r, 0); return; }
    if (r < 0 && errno == EAGAIN) return;
    (void)revents;
    /* EOF (or EIO from a pty whose last holder exited): stop watching, keep the fd until the reap */
    watch_del(w);
}

/* ---- create ---- */

void h_create_container(uint64_t id, jnode *req)
{
    const char *cid = jgets(req, "containerId"), *image = jgets(req, "image");
    if (!cid || !*cid || strlen(cid) >= sizeof(((container *)0)->id) || strchr(cid, '/')) {
        reply_err(id, "InvalidArgument", "containerId is required (no '/')");
        return;
    }
    if (container_find(cid)) { reply_err(id, "AlreadyExists", "container %s already exists", cid); return; }
    if (!image || !image_mount_dir(image)) {
        reply_err(id, "NotFound", "image disk %s is not attached or not mounted", image ? image : "(none)");
        return;
    }
    char **args = jstrv(jget(req, "args"));
    int nargs = args && args[0];
    free(args);
    if (!nargs) { reply_err(id, "InvalidArgument", "args must name the program to run"); return; }
    container *c = calloc(1, sizeof(*c));
    snprintf(c->id, sizeof(c->id), "%s", cid);
    snprintf(c->name, sizeof(c->name), "%s", jgets(req, "name") ? jgets(req, "name") : cid);
    snprintf(c->image_dir, sizeof(c->image_dir), "%s", image_mount_dir(image));
    snprintf(c->rootfs, sizeof(c->rootfs), "/run/containers/%s/rootfs", cid);
    snprintf(c->upper, sizeof(c->upper), "%s/containers/%s/upper", pod_root, cid);
    snprintf(c->work, sizeof(c->work), "%s/containers/%s/work", pod_root, cid);
    snprintf(c->cgroup, sizeof(c->cgroup), "/sys/fs/cgroup/pv-%s", cid);
    const char *lp = jgets(req, "logPath");
    char deflog[256];
    snprintf(deflog, sizeof(deflog), "logs/%s.log", cid);
    if (safe_join(c->log_path, sizeof(c->log_path), pod_root, lp && *lp ? lp : deflog)) {
        reply_err(id, "InvalidArgument", "bad logPath");
        free(c);
        return;
    }
    rm_rf(c->upper);
    rm_rf(c->work);
    if (mkdir_p(c->rootfs, 0755) || mkdir_p(c->upper, 0755) || mkdir_p(c->work, 0700)) {
        reply_err(id, "Internal", "cannot prepare %s: %s", cid, strerror(errno));
        free(c);
        return;
    }
    char dir[600];
    snprintf(dir, sizeof(dir), "%s", c->log_path);
    *strrchr(dir, '/') = 0;
    mkdir_p(dir, 0755);
    c->log_fd = open(c->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    c->tty = jgetb(req, "tty", 0);
    c->out_fd = c->err_fd = c->in_fd = c->mntns_fd = c->pidns_fd = -1;
    c->created_ns = now_realtime_ns();
    c->spec = req;
    loop_keep_request = 1;
    c->next = containers;
    containers = c;
    reply_ok(id, "");
}

static void write_limit(const char *cg, const char *file, const char *value)
{
    char p[400];
    snprintf(p, sizeof(p), "%s/%s", cg, file);
    if (write_file(p, value)) logmsg("%s = %s: %s", p, value, strerror(errno));
}

void h_start_container(uint64_t id, jnode *req)
{
    container *c = container_find(jgets(req, "containerId"));
    if (!c) { reply_err(id, "NotFound", "no container %s", jgets(req, "containerId") ? jgets(req, "containerId") : ""); return; }
    if (c->state != 0) { reply_err(id, "FailedPrecondition", "container %s is %s", c->id, state_name(c->state)); return; }
    jnode *res = jget(c->spec, "resources");
    mkdir(c->cgroup, 0755);
    long long mem = jgeti(res, "memoryLimitBytes", 0), cpu_m = jgeti(res, "cpuLimitMillis", 0);
    if (mem > 0) { char v[32]; snprintf(v, sizeof(v), "%lld", mem); write_limit(c->cgroup, "memory.max", v); write_limit(c->cgroup, "memory.swap.max", "0"); }
    if (cpu_m > 0) {
        static int cpu_controller;
        if (!cpu_controller && write_file("/sys/fs/cgroup/cgroup.subtree_control", "+cpu") == 0) cpu_controller = 1;
        char v[64];
        snprintf(v, sizeof(v), "%lld 100000", cpu_m * 100);
        write_limit(c->cgroup, "cpu.max", v);
    }
    int ep[2], outp[2] = {-1, -1}, errp[2] = {-1, -1}, inp[2] = {-1, -1}, master = -1, slave = -1;
    if (pipe2(ep, O_CLOEXEC)) { reply_err(id, "Internal", "pipe: %s", strerror(errno)); return; }
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    char pts[300];
    snprintf(pts, sizeof(pts), "/run/containers/%s/pts", c->id);
    mkdir_p(pts, 0755);
    if (mount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") && errno != EBUSY) {
        reply_err(id, "Internal", "devpts for %s: %s", c->id, strerror(errno));
        return;
    }
    if (c->tty) {
        char ptmx[320];
        snprintf(ptmx, sizeof(ptmx), "%s/ptmx", pts);
        int unlock = 0;
        master = open(ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) || (slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY)) < 0) {
            reply_err(id, "Internal", "pty: %s", strerror(errno));
            return;
        }
        struct winsize ws = {(unsigned short)jgeti(c->spec, "rows", 24), (unsigned short)jgeti(c->spec, "cols", 80), 0, 0};
        ioctl(master, TIOCSWINSZ, &ws);
    } else {
        if (pipe2(outp, O_CLOEXEC) || pipe2(errp, O_CLOEXEC)) { reply_err(id, "Internal", "pipe: %s", strerror(errno)); return; }
        if (jgetb(c->spec, "stdin", 0) && pipe2(inp, O_CLOEXEC)) { reply_err(id, "Internal", "pipe: %s", strerror(errno)); return; }
    }
    long long t0 = now_boottime_ms();
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWNS | CLONE_NEWPID | SIGCHLD, NULL, NULL, NULL, 0);
    if (pid < 0) { reply_err(id, "Internal", "clone: %s", strerror(errno)); return; }
    if (pid == 0) {
        close(ep[0]);
        container_child(c, ep[1], inp[0] >= 0 ? inp[0] : devnull, outp[1], errp[1], slave);
        _exit(127);
    }
    close(ep[1]);
    if (slave >= 0) close(slave);
    if (outp[1] >= 0) close(outp[1]);
    if (errp[1] >= 0) close(errp[1]);
    if (inp[0] >= 0) close(inp[0]);
    close(devnull);
    c->pid = pid;
    c->state = 1;
    c->started_ns = now_realtime_ns();
    if (c->tty) { c->out_fd = master; c->in_fd = fcntl(master, F_DUPFD_CLOEXEC, 0); }
    else { c->out_fd = outp[0]; c->err_fd = errp[0]; c->in_fd = inp[1]; }
    if (c->in_fd >= 0) set_nonblock(c->in_fd, 1);
    set_nonblock(c->out_fd, 1);
    c->wout = (watch){c->out_fd, POLLIN, on_output, c, 0};
    watch_add(&c->wout);
    if (c->err_fd >= 0) {
        set_nonblock(c->err_fd, 1);
        c->werr = (watch){c->err_fd, POLLIN, on_output, c, 0};
        watch_add(&c->werr);
    }
    char msg[512];
    ssize_t r = read(ep[0], msg, sizeof(msg) - 1);
    close(ep[0]);
    if (pv_debug) logmsg("container %s: clone to exec %lld ms", c->id, now_boottime_ms() - t0);
    if (r > 0) {
        msg[r] = 0;
        snprintf(c->message, sizeof(c->message), "%s", msg);
        c->start_error = 1;
        /* the child exits 128; the reap reports it with reason StartError */
        reply_err(id, "StartError", "%s", msg);
        return;
    }
    char p[128];
    snprintf(p, sizeof(p), "/proc/%d/ns/mnt", (int)pid);
    c->mntns_fd = open(p, O_RDONLY | O_CLOEXEC);
    snprintf(p, sizeof(p), "/proc/%d/ns/pid", (int)pid);
    c->pidns_fd = open(p, O_RDONLY | O_CLOEXEC);
    sb o = {0};
    sb_printf(&o, "\"pid\":%d,\"startedAt\":%lld", (int)pid, c->started_ns);
    reply_ok(id, o.b);
    sb_free(&o);
}

int container_reap(pid_t pid, int status)
{
    container *c;
    for (c = containers; c; c = c->next) if (c->state == 1 && c->pid == pid) break;
    if (!c) return 0;
    c->state = 2;
    c->finished_ns = now_realtime_ns();
    c->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    char p[400];
    snprintf(p, sizeof(p), "%s/memory.events", c->cgroup);
    c->oom = read_ll(p, "oom_kill") > 0;
    if (c->start_error) snprintf(c->reason, sizeof(c->reason), "StartError");
    else if (c->oom) snprintf(c->reason, sizeof(c->reason), "OOMKilled");
    else snprintf(c->reason, sizeof(c->reason), c->exit_code == 0 ? "Completed" : "Error");
    if (c->out_fd >= 0) { drain_fd(c, c->out_fd, 0, 1); watch_del(&c->wout); close(c->out_fd); c->out_fd = -1; }
    if (c->err_fd >= 0) { drain_fd(c, c->err_fd, 1, 1); watch_del(&c->werr); close(c->err_fd); c->err_fd = -1; }
    if (c->in_fd >= 0) { close(c->in_fd); c->in_fd = -1; }
    if (c->mntns_fd >= 0) { close(c->mntns_fd); c->mntns_fd = -1; }
    if (c->pidns_fd >= 0) { close(c->pidns_fd); c->pidns_fd = -1; }
    if (c->log_fd >= 0) fsync(c->log_fd);
    rmdir(c->cgroup);
    streams_log_end(c);
    sb st = {0};
    container_status_json(&st, c);
    for (int i = 0; i < c->nwaiters; i++) {
        sb m = {0};
        sb_puts(&m, "\"status\":");
        sb_add(&m, st.b, st.n);
        reply_ok(c->waiters[i], m.b);
        sb_free(&m);
    }
    free(c->waiters);
    c->waiters = NULL;
    c->nwaiters = 0;
    sb ev = {0};
    sb_puts(&ev, "\"type\":\"ContainerExit\",\"status\":");
    sb_add(&ev, st.b, st.n);
    send_event(&ev, NULL, 0);
    sb_free(&st);
    return 1;
}

void containers_drop_waiters(void)
{
    for (container *c = containers; c; c = c->next) { free(c->waiters); c->waiters = NULL; c->nwaiters = 0; }
}

void h_wait_container(uint64_t id, jnode *req)
{
    container *c = container_find(jgets(req, "containerId"));
    if (!c) { reply_err(id, "NotFound", "no container %s", jgets(req, "containerId") ? jgets(req, "containerId") : ""); return; }
    if (c->state == 2) {
        sb m = {0};
        sb_puts(&m, "\"status\":");
        container_status_json(&m, c);
        reply_ok(id, m.b);
        sb_free(&m);
        return;
    }
    uint64_t *w = realloc(c->waiters, sizeof(uint64_t) * (size_t)(c->nwaiters + 1));
    if (!w) { reply_err(id, "Internal", "out of memory"); return; }
    c->waiters = w;
    c->waiters[c->nwaiters++] = id;
}

void h_signal_container(uint64_t id, jnode *req)
{
    container *c = container_find(jgets(req, "containerId"));
    int sig = (int)jgeti(req, "signal", SIGTERM);
    if (!c) { reply_err(id, "NotFound", "no container %s", jgets(req, "containerId") ? jgets(req, "containerId") : ""); return; }
    if (c->state != 1) { reply_ok(id, "\"delivered\":false"); return; }
    if (jgetb(req, "all", 0) && sig == SIGKILL) {
        char p[400];
        snprintf(p, sizeof(p), "%s/cgroup.kill", c->cgroup);
        if (!write_file(p, "1")) { reply_ok(id, "\"delivered\":true"); return; }
    }
    if (kill(c->pid, sig)) { reply_err(id, "Internal", "kill: %s", strerror(errno)); return; }
    reply_ok(id, "\"delivered\":true");
}

void h_remove_container(uint64_t id, jnode *req)
{
    container *c = container_find(jgets(req, "containerId"));
    if (!c) { reply_ok(id, ""); return; }
    if (c->state == 1) { reply_err(id, "FailedPrecondition", "container %s is running; stop it first", c->id); return; }
    char dir[400];
    snprintf(dir, sizeof(dir), "%s/containers/%s", pod_root, c->id);
    rm_rf(dir);
    snprintf(dir, sizeof(dir), "/run/containers/%s/pts", c->id);
    umount2(dir, MNT_DETACH);
    snprintf(dir, sizeof(dir), "/run/containers/%s", c->id);
    rm_rf(dir);
    if (c->log_fd >= 0) close(c->log_fd);
    for (container **pp = &containers; *pp; pp = &(*pp)->next)
        if (*pp == c) { *pp = c->next; break; }
    json_free(c->spec);
    free(c->waiters);
    free(c);
    reply_ok(id, "");
}

void h_list_containers(uint64_t id, jnode *req)
{
    (void)req;
    sb m = {0};
    sb_puts(&m, "\"containers\":");
    containers_status_json(&m);
    reply_ok(id, m.b);
    sb_free(&m);
}

void h_stats(uint64_t id, jnode *req)
{
    (void)req;
    sb m = {0};
    char buf[4096];
    unsigned long long v[10] = {0};
    if (read_file("/proc/stat", buf, sizeof(buf)) > 0)
        sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    long hz = sysconf(_SC_CLK_TCK);
    sb_printf(&m, "\"timestamp\":%lld,\"cpu\":{\"usageNs\":%llu,\"count\":%ld},", now_realtime_ns(),
              busy * (1000000000ULL / (unsigned long long)(hz > 0 ? hz : 100)), sysconf(_SC_NPROCESSORS_ONLN));
    long long total = read_ll("/proc/meminfo", "MemTotal"), avail = read_ll("/proc/meminfo", "MemAvailable");
    sb_printf(&m, "\"memory\":{\"totalBytes\":%lld,\"availableBytes\":%lld,\"usedBytes\":%lld},", total * 1024,
              avail * 1024, (total - avail) * 1024);
    struct statvfs fs;
    if (!statvfs(pod_root, &fs))
        sb_printf(&m, "\"filesystem\":{\"capacityBytes\":%llu,\"availableBytes\":%llu,\"usedBytes\":%llu,\"inodes\":%llu,\"inodesFree\":%llu},",
                  (unsigned long long)fs.f_blocks * fs.f_frsize, (unsigned long long)fs.f_bavail * fs.f_frsize,
                  (unsigned long long)(fs.f_blocks - fs.f_bfree) * fs.f_frsize, (unsigned long long)fs.f_files,
                  (unsigned long long)fs.f_ffree);
    sb_puts(&m, "\"containers\":[");
    int first = 1;
    for (container *c = containers; c; c = c->next) {
        if (c->state != 1) continue;
        char p[400];
        snprintf(p, sizeof(p), "%s/cpu.stat", c->cgroup);
        long long usec = read_ll(p, "usage_usec");
        snprintf(p, sizeof(p), "%s/memory.current", c->cgroup);
        long long cur = read_ll(p, NULL);
        snprintf(p, sizeof(p), "%s/memory.stat", c->cgroup);
        long long inactive = read_ll(p, "inactive_file");
        snprintf(p, sizeof(p), "%s/pids.current", c->cgroup);
        long long pids = read_ll(p, NULL);
        long long ws = cur - (inactive > 0 ? inactive : 0);
        sb_printf(&m, "%s{\"containerId\":", first ? "" : ",");
        sb_jstr(&m, c->id);
        sb_printf(&m, ",\"cpuUsageNs\":%lld,\"memoryBytes\":%lld,\"workingSetBytes\":%lld,\"pids\":%lld}",
                  usec * 1000, cur, ws < 0 ? 0 : ws, pids);
        first = 0;
    }
    sb_puts(&m, "]");
    reply_ok(id, m.b);
    sb_free(&m);
}
