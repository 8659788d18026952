/* PID 1: make a usable system out of the initramfs, then serve the agent port forever.
 *
 * The kernel starts us on the initramfs (rootfs), where pivot_root(2) is impossible. So after loading
 * the modules we mount a tmpfs, bind the initramfs' /bin and /lib into it and move it over /: containers
 * can then pivot_root into their own roots. Modules come from /lib/modules/pv-modules, already in
 * dependency order (the build resolved it), loaded with finit_module(2): no modprobe, no depmod.
 */
#include "pv.h"

#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

long long t_init_start_ms, t_modules_ms, t_agent_ready_ms;

static void early_console(void)
{
    if (fcntl(2, F_GETFD) >= 0) return;
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0) return;
    dup2(fd, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    if (fd > 2) close(fd);
}

int pv_debug;

/* One line per module, in load order: "<file> <group>". Group "boot" always loads; "virtio-<id>" only if
 * a virtio device of that id is present (1 net, 2 block, 3 console); any other group is loaded on demand
 * with load_module_group() (erofs for an erofs image disk, quota for the ephemeral disk's quotas). */
static int virtio_present(int id)
{
    DIR *d = opendir("/sys/bus/virtio/devices");
    struct dirent *e;
    int found = 0;
    while (d && !found && (e = readdir(d))) {
        char p[300], v[32];
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof(p), "/sys/bus/virtio/devices/%s/device", e->d_name);
        if (read_file(p, v, sizeof(v)) > 0 && strtol(v, NULL, 16) == id) found = 1;
    }
    if (d) closedir(d);
    return found;
}

static void load_one(const char *file)
{
    char path[512];
    snprintf(path, sizeof(path), "/lib/modules/%s", file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { logmsg("module %s: %s", file, strerror(errno)); return; }
    long long t0 = now_boottime_ms();
    if (syscall(SYS_finit_module, fd, "", 0) && errno != EEXIST) logmsg("load %s: %s", file, strerror(errno));
    if (pv_debug) logmsg("module %s: %lld ms", file, now_boottime_ms() - t0);
    close(fd);
}

static char module_list[8192];

static void load_modules(const char *only_group)
{
    if (!module_list[0] && read_file("/lib/modules/pv-modules", module_list, sizeof(module_list)) < 0) return;
    char copy[sizeof(module_list)];
    memcpy(copy, module_list, sizeof(copy));
    for (char *save = NULL, *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *group = strchr(line, ' ');
        if (!*line || *line == '#' || !group) continue;
        *group++ = 0;
        if (only_group) {
            if (!strcmp(group, only_group)) load_one(line);
        } else if (!strcmp(group, "boot") || (!strncmp(group, "virtio-", 7) && virtio_present(atoi(group + 7)))) {
            load_one(line);
        }
    }
}

void load_module_group(const char *group)
{
    static char loaded[256];
    char tag[64];
    snprintf(tag, sizeof(tag), "|%s|", group);
    if (strstr(loaded, tag)) return;
    if (strlen(loaded) + strlen(tag) < sizeof(loaded)) strcat(loaded, tag);
    load_modules(group);
}

static void must_mount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data)
{
    mkdir_p(dst, 0755);
    if (mount(src, dst, type, flags, data) && errno != EBUSY) logmsg("mount %s on %s: %s", type ? type : src, dst, strerror(errno));
}

static void leave_initramfs(void)
{
    must_mount("tmpfs", "/newroot", "tmpfs", MS_NOSUID, "mode=755");
    static const char *dirs[] = {"bin", "dev", "proc", "sys", "run", "tmp", "etc", "lib", "root"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char p[64];
        snprintf(p, sizeof(p), "/newroot/%s", dirs[i]);
        mkdir(p, 0755);
    }
    chmod("/newroot/tmp", 01777);
    static const char *binds[] = {"bin", "lib"};
    for (size_t i = 0; i < 2; i++) {
        char src[16], dst[32];
        snprintf(src, sizeof(src), "/%s", binds[i]);
        snprintf(dst, sizeof(dst), "/newroot/%s", binds[i]);
        if (mount(src, dst, NULL, MS_BIND, NULL)) logmsg("bind %s: %s", src, strerror(errno));
        mount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL);
    }
    static const char *moves[] = {"/dev", "/proc", "/sys"};
    for (size_t i = 0; i < 3; i++) {
        char p[64];
        snprintf(p, sizeof(p), "/newroot%s", moves[i]);
        if (mount(moves[i], p, NULL, MS_MOVE, NULL)) logmsg("move %s: %s", moves[i], strerror(errno));
    }
    if (chdir("/newroot") || mount(".", "/", NULL, MS_MOVE, NULL) || chroot(".") || chdir("/"))
        logmsg("switch root: %s", strerror(errno));
}

static void loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, IFNAMSIZ, "lo");
    if (s >= 0 && !ioctl(s, SIOCGIFFLAGS, &ifr)) {
        ifr.ifr_flags |= IFF_UP;
        ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    if (s >= 0) close(s);
}

static int open_agent_port(void)
{
    for (int attempt = 0; attempt < 5000; attempt++) {
        DIR *d = opendir("/sys/class/virtio-ports");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char p[300], name[128];
            snprintf(p, sizeof(p), "/sys/class/virtio-ports/%s/name", e->d_name);
            if (read_file(p, name, sizeof(name)) <= 0) continue;
            name[strcspn(name, "\n")] = 0;
            if (strcmp(name, PV_PORT_NAME)) continue;
            snprintf(p, sizeof(p), "/dev/%s", e->d_name);
            int fd = open(p, O_RDWR | O_CLOEXEC);
            if (fd >= 0) { closedir(d); return fd; }
        }
        if (d) closedir(d);
        usleep(2000);
    }
    return -1;
}

int main(void)
{
    t_init_start_ms = now_boottime_ms();
    mkdir("/dev", 0755);
    mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    early_console();
    must_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    must_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    {
        char cmd[2048];
        if (read_file("/proc/cmdline", cmd, sizeof(cmd)) > 0 && strstr(cmd, "pv.debug")) pv_debug = 1;
    }
    load_modules(NULL);
    t_modules_ms = now_boottime_ms();
    leave_initramfs();
    must_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "ptmxmode=0666,mode=0620");
    must_mount("tmpfs", "/run/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    must_mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    /* favordynmods: moving a process into a cgroup then needs no RCU grace period (a container start) */
    mkdir_p("/sys/fs/cgroup", 0755);
    if (mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, "favordynmods"))
        must_mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    /* the cpu controller only when a container has a CPU limit (container.c): each cgroup it covers costs a
     * scheduler group, and cpu.stat's usage is there without it */
    write_file("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids");
    mkdir_p(pod_root, 0755);
    loopback_up();
    if (sethostname("pod", 3)) { }
    int port = open_agent_port();
    if (port < 0) {
        logmsg("no virtio-serial port named %s: powering off", PV_PORT_NAME);
        power_off();
    }
    t_agent_ready_ms = now_boottime_ms();
    logmsg_later("ready (init %lld ms, modules %lld ms after init)", t_init_start_ms, t_modules_ms - t_init_start_ms);
    loop_run(port);
    power_off();
    return 0;
}
