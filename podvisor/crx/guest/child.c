/* The child side of a container start or an exec: everything between clone/fork and execve.
 *
 * A container child joins its cgroup, makes its mount namespace private, mounts the overlay root (the
 * image disk read-only below, its writable layer on the ephemeral disk above), /proc, /sys (read-only),
 * a small /dev with the container's own devpts, the pod's /dev/shm and /etc files and its volumes, then
 * pivots into the root. Both kinds of child then set cwd, user and capabilities (the usual runtime
 * default set) and exec. Any failure is written to the error pipe, which the agent reports as a
 * StartError with the runtime-style message ("executable file not found in $PATH").
 */
#include "pv.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/capability.h>

static int dbg_fd = -1;
#define CHILD_MARK(what) do { if (dbg_fd >= 0) dprintf(dbg_fd, "pv-child[%lld]: %s\n", now_boottime_ms(), what); } while (0)

static const char *CAP_NAMES[] = {
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
};
#define NCAPS ((int)(sizeof(CAP_NAMES) / sizeof(CAP_NAMES[0])))
/* the default set of container runtimes */
static const unsigned long long DEFAULT_CAPS = (1ULL << 0) | (1ULL << 1) | (1ULL << 3) | (1ULL << 4) | (1ULL << 5) |
    (1ULL << 6) | (1ULL << 7) | (1ULL << 8) | (1ULL << 10) | (1ULL << 13) | (1ULL << 18) | (1ULL << 27) |
    (1ULL << 29) | (1ULL << 31);

static unsigned long long cap_mask(jnode *list, int *all)
{
    unsigned long long m = 0;
    *all = 0;
    if (!list) return 0;
    for (jnode *e = list->child; e; e = e->next) {
        if (e->t != J_STR) continue;
        const char *n = e->s;
        if (!strncasecmp(n, "CAP_", 4)) n += 4;
        if (!strcasecmp(n, "ALL")) { *all = 1; continue; }
        for (int i = 0; i < NCAPS; i++) if (!strcasecmp(n, CAP_NAMES[i])) m |= 1ULL << i;
    }
    return m;
}

static int apply_caps(jnode *spec, int uid)
{
    jnode *caps = jget(spec, "capabilities");
    int add_all, drop_all;
    unsigned long long add = cap_mask(jget(caps, "add"), &add_all), drop = cap_mask(jget(caps, "drop"), &drop_all);
    unsigned long long keep = drop_all ? 0 : DEFAULT_CAPS & ~drop;
    keep |= add_all ? ~0ULL : add;
    for (int i = 0; i < 64; i++)
        if (!(keep & (1ULL << i)) && prctl(PR_CAPBSET_DROP, i, 0, 0, 0) && errno == EINVAL) break;
    if (uid != 0) return 0; /* setuid to non-root clears the rest */
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof(d));
    d[0].effective = d[0].permitted = d[0].inheritable = (uint32_t)keep;
    d[1].effective = d[1].permitted = d[1].inheritable = (uint32_t)(keep >> 32);
    return (int)syscall(SYS_capset, &h, d);
}

static void child_fail(int errfd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n > 0 && write(errfd, msg, (size_t)(n < (int)sizeof(msg) ? n : (int)sizeof(msg) - 1)) < 0) { }
    _exit(128);
}

static int bind_into(const char *src, const char *root, const char *dst, int ro, int is_file)
{
    char target[1024];
    if (safe_join(target, sizeof(target), root, dst)) return -1;
    if (is_file) {
        char dir[1024];
        snprintf(dir, sizeof(dir), "%s", target);
        char *sl = strrchr(dir, '/');
        if (sl && sl != dir) { *sl = 0; mkdir_p(dir, 0755); }
        int fd = open(target, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd >= 0) close(fd);
    } else {
        mkdir_p(target, 0755);
    }
    if (mount(src, target, NULL, MS_BIND | MS_REC, NULL)) return -1;
    if (ro && mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, NULL)) return -1;
    return 0;
}

static void setup_dev(int errfd, const char *root, const char *pts)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/dev", root);
    mkdir_p(p, 0755);
    if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"))
        child_fail(errfd, "mount /dev: %s", strerror(errno));
    static const char *nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
        char src[64], dst[64];
        snprintf(src, sizeof(src), "/dev/%s", nodes[i]);
        snprintf(dst, sizeof(dst), "/dev/%s", nodes[i]);
        if (bind_into(src, root, dst, 0, 1)) child_fail(errfd, "bind %s: %s", src, strerror(errno));
    }
    /* the container's own devpts instance, mounted by the agent so it can allocate ptys in it */
    if (bind_into(pts, root, "/dev/pts", 0, 0)) child_fail(errfd, "mount devpts: %s", strerror(errno));
    snprintf(p, sizeof(p), "%s/dev/ptmx", root);
    if (symlink("pts/ptmx", p)) { }
    bind_into("/run/shm", root, "/dev/shm", 0, 0);
    static const char *links[][2] = {{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
                                     {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}};
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof(p), "%s/dev/%s", root, links[i][1]);
        if (symlink(links[i][0], p)) { }
    }
}

static int lookup_user(const char *name, int *uid, int *gid, char *home, size_t hcap)
{
    char buf[65536];
    if (read_file("/etc/passwd", buf, sizeof(buf)) < 0) return -1;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        char *f[7] = {0};
        int k = 0;
        for (char *p = line; k < 7; k++) { f[k] = p; p = strchr(p, ':'); if (!p) { k++; break; } *p++ = 0; }
        if (k < 6 || !f[0] || !f[2] || !f[3]) continue;
        if (!strcmp(f[0], name) || (name[0] >= '0' && name[0] <= '9' && atoi(name) == atoi(f[2]))) {
            *uid = atoi(f[2]);
            *gid = atoi(f[3]);
            if (f[5]) snprintf(home, hcap, "%s", f[5]);
            return 0;
        }
    }
    return -1;
}

static int find_program(const char *prog, char **env, char *out, size_t cap)
{
    if (strchr(prog, '/')) { snprintf(out, cap, "%s", prog); return access(out, X_OK); }
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (char **e = env; e && *e; e++) if (!strncmp(*e, "PATH=", 5)) path = *e + 5;
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *save = NULL, *d = strtok_r(tmp, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, cap, "%s/%s", *d ? d : ".", prog);
        if (!access(out, X_OK)) return 0;
    }
    errno = ENOENT;
    return -1;
}

/* After the root is in place: cwd, user, capabilities, exec. Shared by containers and exec sessions. */
static void finish_and_exec(int errfd, jnode *spec, char **args, char **env_in, const char *cwd, jnode *user)
{
    int uid = (int)jgeti(user, "uid", 0), gid = (int)jgeti(user, "gid", -1);
    char home[512] = "";
    const char *uname = jgets(user, "name");
    if (uname && *uname) {
        int u2, g2;
        if (lookup_user(uname, &u2, &g2, home, sizeof(home)))
            child_fail(errfd, "unable to find user %s: no matching entries in passwd file", uname);
        uid = u2;
        if (gid < 0) gid = g2;
    } else {
        int u2, g2;
        char ubuf[32];
        snprintf(ubuf, sizeof(ubuf), "%d", uid);
        if (!lookup_user(ubuf, &u2, &g2, home, sizeof(home)) && gid < 0) gid = g2;
    }
    if (gid < 0) gid = 0;
    /* environment: the given one plus PATH, HOME and HOSTNAME when missing */
    int n = 0;
    while (env_in && env_in[n]) n++;
    char **env = calloc((size_t)n + 4, sizeof(char *));
    int k = 0, has_path = 0, has_home = 0, has_host = 0;
    for (int i = 0; i < n; i++) {
        env[k++] = env_in[i];
        has_path |= !strncmp(env_in[i], "PATH=", 5);
        has_home |= !strncmp(env_in[i], "HOME=", 5);
        has_host |= !strncmp(env_in[i], "HOSTNAME=", 9);
    }
    if (!has_path) env[k++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    static char homebuf[600], hostbuf[300];
    if (!has_home) { snprintf(homebuf, sizeof(homebuf), "HOME=%s", *home ? home : uid == 0 ? "/root" : "/"); env[k++] = homebuf; }
    if (!has_host && *sandbox_hostname) { snprintf(hostbuf, sizeof(hostbuf), "HOSTNAME=%s", sandbox_hostname); env[k++] = hostbuf; }
    if (cwd && *cwd) {
        mkdir_p(cwd, 0755);
        if (chdir(cwd)) child_fail(errfd, "chdir to cwd (\"%s\") set in config.json failed: %s", cwd, strerror(errno));
    }
    char prog[4096];
    if (find_program(args[0], env, prog, sizeof(prog)))
        child_fail(errfd, "exec: \"%s\": executable file not found in $PATH", args[0]);
    if (apply_caps(spec, uid)) child_fail(errfd, "capset: %s", strerror(errno));
    jnode *groups = jget(user, "additionalGids");
    gid_t gl[64];
    int ng = 0;
    if (groups) for (jnode *g = groups->child; g && ng < 64; g = g->next) gl[ng++] = (gid_t)g->i;
    if (setgroups((size_t)ng, gl) || setgid((gid_t)gid) || setuid((uid_t)uid))
        child_fail(errfd, "set user %d:%d: %s", uid, gid, strerror(errno));
    if (jgetb(spec, "noNewPrivileges", 0)) prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    CHILD_MARK("exec");
    if (dbg_fd >= 0) close(dbg_fd);
    execve(prog, args, env);
    child_fail(errfd, "exec: \"%s\": %s", args[0], strerror(errno));
}

static void child_common(int errfd, int in, int out, int err, int tty_slave)
{
    if (pv_debug) dbg_fd = dup(2);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < 32; s++) signal(s, SIG_DFL);
    setsid();
    if (tty_slave >= 0) { in = out = err = tty_slave; ioctl(tty_slave, TIOCSCTTY, 0); }
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) child_fail(errfd, "dup2: %s", strerror(errno));
    /* close every other descriptor (close_range, Linux 5.9+), keeping errfd and dbg_fd */
    int keep[2] = {errfd < dbg_fd ? errfd : dbg_fd, errfd < dbg_fd ? dbg_fd : errfd};
    unsigned int from = 3;
    for (int i = 0; i < 2; i++) {
        if (keep[i] < 3) continue;
        if ((unsigned int)keep[i] > from) syscall(SYS_close_range, from, (unsigned int)keep[i] - 1, 0);
        from = (unsigned int)keep[i] + 1;
    }
    syscall(SYS_close_range, from, ~0U, 0);
}

void container_child(container *c, int errfd, int in, int out, int err, int tty_slave)
{
    jnode *s = c->spec;
    child_common(errfd, in, out, err, tty_slave);
    char p[1024];
    CHILD_MARK("start");
    snprintf(p, sizeof(p), "%s/cgroup.procs", c->cgroup);
    write_file(p, "0");
    CHILD_MARK("cgroup joined");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) child_fail(errfd, "make / private: %s", strerror(errno));
    snprintf(p, sizeof(p), "lowerdir=%s,upperdir=%s,workdir=%s", c->image_dir, c->upper, c->work);
    if (mount("overlay", c->rootfs, "overlay", 0, p)) child_fail(errfd, "mount the container root: %s", strerror(errno));
    const char *root = c->rootfs;
    CHILD_MARK("overlay mounted");
    snprintf(p, sizeof(p), "%s/proc", root);
    mkdir_p(p, 0555);
    if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) child_fail(errfd, "mount /proc: %s", strerror(errno));
    snprintf(p, sizeof(p), "%s/sys", root);
    mkdir_p(p, 0555);
    if (mount("sysfs", p, "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL)) { /* optional */ }
    CHILD_MARK("proc sys");
    char pts[300];
    snprintf(pts, sizeof(pts), "/run/containers/%s/pts", c->id);
    setup_dev(errfd, root, pts);
    CHILD_MARK("dev");
    static const char *etc[] = {"hosts", "hostname", "resolv.conf"};
    for (int i = 0; i < 3; i++) {
        char src[256], dst[64];
        snprintf(src, sizeof(src), "/run/sandbox/%s", etc[i]);
        snprintf(dst, sizeof(dst), "/etc/%s", etc[i]);
        if (!access(src, R_OK)) bind_into(src, root, dst, 0, 1);
    }
    jnode *mounts = jget(s, "mounts");
    if (mounts) for (jnode *m = mounts->child; m; m = m->next) {
        const char *src = jgets(m, "source"), *dst = jgets(m, "destination");
        if (!src || !dst) continue;
        char full[1024];
        if (src[0] == '/') {
            if (strncmp(src, "/run/", 5) || strstr(src, "..")) child_fail(errfd, "mount source %s is outside /run", src);
            snprintf(full, sizeof(full), "%s", src);
        } else if (safe_join(full, sizeof(full), pod_root, src)) {
            child_fail(errfd, "bad mount source %s", src);
        }
        struct stat st;
        if (stat(full, &st)) { if (mkdir_p(full, 0777)) child_fail(errfd, "mount source %s: %s", src, strerror(errno)); st.st_mode = S_IFDIR; }
        if (bind_into(full, root, dst, jgetb(m, "readOnly", 0), !S_ISDIR(st.st_mode)))
            child_fail(errfd, "mount %s on %s: %s", src, dst, strerror(errno));
    }
    CHILD_MARK("mounts");
    if (chdir(root) || syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) || chdir("/"))
        child_fail(errfd, "pivot_root: %s", strerror(errno));
    CHILD_MARK("pivoted");
    char **args = jstrv(jget(s, "args"));
    char **env = jstrv(jget(s, "env"));
    finish_and_exec(errfd, s, args, env, jgets(s, "workingDir"), jget(s, "user"));
}

/* An exec session's child: enter the container's mount namespace (the PID namespace was entered by the
 * parent before fork), then the same cwd/user/exec path as the container itself. */
void exec_in_container(container *c, int errfd, int in, int out, int err, int tty_slave, char **args, char **env,
                       const char *cwd, jnode *user)
{
    char p[300];
    snprintf(p, sizeof(p), "%s/cgroup.procs", c->cgroup);
    write_file(p, "0");
    if (setns(c->mntns_fd, CLONE_NEWNS)) child_fail(errfd, "enter the container: %s", strerror(errno));
    if (chdir("/")) { }
    child_common(errfd, in, out, err, tty_slave);
    finish_and_exec(errfd, c->spec, args, env, cwd && *cwd ? cwd : jgets(c->spec, "workingDir"),
                    user ? user : jget(c->spec, "user"));
}
