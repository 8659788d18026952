/* The sandbox: what the pod's containers share. Hello (clock, entropy, versions), disks found by their
 * virtio serial and mounted (image disks read-only, the ephemeral disk at /run/pod), NICs found by MAC,
 * renamed and addressed, the hostname, /etc files for containers, volumes and files on the ephemeral
 * disk, and power-off.
 *
 * Disks are named by serial, never by /dev/vdX order: the order follows the device tree and may differ
 * between a cold boot and a restored template.
 */
#include "pv.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <signal.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/quota.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef PRJQUOTA
#define PRJQUOTA 2
#endif

char pod_root[] = "/run/pod";
char sandbox_hostname[256];
static char ephemeral_dev[64];
static int ephemeral_quota;
static int next_projid = 1000;

typedef struct image { char id[64], dir[128]; struct image *next; } image;
static image *images;

const char *image_mount_dir(const char *disk_id)
{
    for (image *i = images; i; i = i->next)
        if (!strcmp(i->id, disk_id)) return i->dir;
    return NULL;
}

/* Bind (or unbind) every virtio block device to virtio_blk. A template is saved with its placeholder
 * disks unbound; binding them after a restore probes the pod's real disks afresh (capacity, no cached
 * sectors of the placeholders). */
static int blk_bound;

static int virtio_blk_bind_all(int bind)
{
    DIR *d = opendir("/sys/bus/virtio/devices");
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d))) {
        char p[300], v[32];
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof(p), "/sys/bus/virtio/devices/%s/device", e->d_name);
        if (read_file(p, v, sizeof(v)) <= 0 || strtol(v, NULL, 16) != 2) continue;
        snprintf(p, sizeof(p), "/sys/bus/virtio/devices/%s/driver", e->d_name);
        int is_bound = access(p, F_OK) == 0;
        if (is_bound == bind) continue;
        if (!write_file(bind ? "/sys/bus/virtio/drivers/virtio_blk/bind" : "/sys/bus/virtio/drivers/virtio_blk/unbind",
                        e->d_name)) n++;
        else logmsg("%s %s: %s", bind ? "bind" : "unbind", e->d_name, strerror(errno));
    }
    if (d) closedir(d);
    return n;
}

/* Before the VM is saved as a template: nothing of the placeholder disks may stay cached. Their
 * capacity stays the placeholders' (huge, sparse) one; a file system never reads past its own end. With
 * "unbind": true the disks are unbound instead and probed afresh after the restore (slower). */
void h_prepare_template(uint64_t id, jnode *req)
{
    int n = 0;
    if (jgetb(req, "unbind", 0)) { n = virtio_blk_bind_all(0); blk_bound = 0; }
    sync();
    write_file("/proc/sys/vm/drop_caches", "3");
    sb m = {0};
    sb_printf(&m, "\"unboundDisks\":%d", n);
    reply_ok(id, m.b);
    sb_free(&m);
}

int find_disk_by_serial(const char *serial, char *dev, size_t cap)
{
    if (!blk_bound) { virtio_blk_bind_all(1); blk_bound = 1; }
    for (int attempt = 0; attempt < 400; attempt++) {
        DIR *d = opendir("/sys/block");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (strncmp(e->d_name, "vd", 2)) continue;
            char p[300], s[128];
            snprintf(p, sizeof(p), "/sys/block/%s/serial", e->d_name);
            if (read_file(p, s, sizeof(s)) < 0) continue;
            s[strcspn(s, "\n")] = 0;
            if (!strcmp(s, serial)) {
                snprintf(dev, cap, "/dev/%s", e->d_name);
                closedir(d);
                return 0;
            }
        }
        if (d) closedir(d);
        usleep(5000);
    }
    return -1;
}

static const char *fs_type(const char *dev)
{
    unsigned char sb[2048];
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    /* drop whatever the block layer cached of this device (after a template restore: the placeholder's) */
    ioctl(fd, BLKFLSBUF, 0);
    ssize_t r = pread(fd, sb, sizeof(sb), 0);
    close(fd);
    if (r < (ssize_t)sizeof(sb)) return NULL;
    if (sb[1080] == 0x53 && sb[1081] == 0xEF) return "ext4";
    if (sb[1024] == 0xE2 && sb[1025] == 0xE1 && sb[1026] == 0xF5 && sb[1027] == 0xE0) return "erofs";
    return NULL;
}

/* Mount one disk by serial; kind "image" read-only under /run/images, "ephemeral" at /run/pod. */
static int mount_disk(const char *id, const char *kind, sb *out, char *err, size_t ecap)
{
    char dev[64], dir[160];
    long long t0 = now_boottime_ms();
    if (find_disk_by_serial(id, dev, sizeof(dev))) { snprintf(err, ecap, "disk %s not found", id); return -1; }
    int is_eph = !strcmp(kind, "ephemeral");
    if (is_eph) snprintf(dir, sizeof(dir), "%s", pod_root);
    else snprintf(dir, sizeof(dir), "/run/images/%s", id);
    const char *fs = "mounted";
    if (is_eph ? *ephemeral_dev != 0 : image_mount_dir(id) != NULL) goto done; /* already mounted */
    fs = fs_type(dev);
    if (!fs) { snprintf(err, ecap, "disk %s (%s) has no ext4 or erofs file system", id, dev); return -1; }
    if (!strcmp(fs, "erofs")) load_module_group("erofs");
    mkdir_p(dir, 0755);
    unsigned long flags = is_eph ? MS_NOATIME : MS_RDONLY | MS_NODEV;
    if (is_eph) {
        load_module_group("quota");
        /* noinit_itable: the host made a sparse image whose unwritten inode tables already read as
         * zeros, so the kernel need not spend the guest's CPU zeroing them in the background;
         * no_prefetch_block_bitmaps: nor start a thread that reads every group's bitmap while the
         * first container is being started (mballoc reads the ones it needs) */
        if (!mount(dev, dir, fs, flags, "prjquota,noinit_itable,no_prefetch_block_bitmaps") ||
            !mount(dev, dir, fs, flags, "prjquota,noinit_itable"))
            ephemeral_quota = 1;
        else if (mount(dev, dir, fs, flags, "noinit_itable") && mount(dev, dir, fs, flags, NULL)) {
            snprintf(err, ecap, "mount %s: %s", id, strerror(errno));
            return -1;
        }
        snprintf(ephemeral_dev, sizeof(ephemeral_dev), "%s", dev);
        mkdir_p("/run/pod/logs", 0755);
        mkdir_p("/run/pod/volumes", 0755);
        mkdir_p("/run/pod/containers", 0700);
    } else {
        /* read executables in a few large requests instead of many 128 KiB ones */
        char ra[128];
        snprintf(ra, sizeof(ra), "/sys/block/%s/queue/read_ahead_kb", dev + 5);
        write_file(ra, "2048");
        if (mount(dev, dir, fs, flags, fs[0] == 'e' && fs[1] == 'x' ? "noload" : NULL) && mount(dev, dir, fs, flags, NULL)) {
            snprintf(err, ecap, "mount %s: %s", id, strerror(errno));
            return -1;
        }
        image *im = calloc(1, sizeof(*im));
        snprintf(im->id, sizeof(im->id), "%s", id);
        snprintf(im->dir, sizeof(im->dir), "%s", dir);
        im->next = images;
        images = im;
    }
done:
    if (pv_debug) logmsg("disk %s (%s) mounted in %lld ms", id, kind, now_boottime_ms() - t0);
    if (out) {
        sb_puts(out, "{\"id\":");
        sb_jstr(out, id);
        sb_printf(out, ",\"device\":\"%s\",\"fsType\":\"%s\",\"mountPath\":\"%s\"}", dev, fs, dir);
    }
    return 0;
}

static int if_ioctl(int s, unsigned long req, struct ifreq *ifr, const char *what, char *err, size_t ecap)
{
    if (ioctl(s, req, ifr) == 0) return 0;
    snprintf(err, ecap, "%s %s: %s", what, ifr->ifr_name, strerror(errno));
    return -1;
}

static int set_up(int s, const char *name, char *err, size_t ecap)
{
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    if (if_ioctl(s, SIOCGIFFLAGS, &ifr, "get flags", err, ecap)) return -1;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return if_ioctl(s, SIOCSIFFLAGS, &ifr, "set up", err, ecap);
}

static int configure_nic(int s, jnode *nic, char *err, size_t ecap)
{
    const char *mac = jgets(nic, "mac"), *want = jgets(nic, "name"), *was = jgets(nic, "templateMac");
    char found[IFNAMSIZ] = "";
    int wrong_mac = 0;
    DIR *d = opendir("/sys/class/net");
    struct dirent *e;
    for (int attempt = 0; attempt < 200 && !*found; attempt++) {
        if (d) rewinddir(d);
        while (d && (e = readdir(d))) {
            char p[300], a[64];
            snprintf(p, sizeof(p), "/sys/class/net/%s/address", e->d_name);
            if (read_file(p, a, sizeof(a)) < 0) continue;
            a[strcspn(a, "\n")] = 0;
            if (mac && !strcasecmp(a, mac)) { snprintf(found, sizeof(found), "%s", e->d_name); break; }
            /* a restored template keeps the template's MAC until we set the pod's */
            if (was && !strcasecmp(a, was)) { snprintf(found, sizeof(found), "%s", e->d_name); wrong_mac = 1; break; }
        }
        if (!*found) usleep(5000);
    }
    if (d) closedir(d);
    if (!*found) { snprintf(err, ecap, "no NIC with MAC %s", mac ? mac : "(none)"); return -1; }
    struct ifreq ifr = {0};
    if (wrong_mac && mac) {
        unsigned int b[6];
        if (sscanf(mac, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) {
            snprintf(err, ecap, "bad MAC %s", mac);
            return -1;
        }
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", found);
        ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
        for (int i = 0; i < 6; i++) ifr.ifr_hwaddr.sa_data[i] = (char)b[i];
        if (if_ioctl(s, SIOCSIFHWADDR, &ifr, "set MAC", err, ecap)) return -1;
        memset(&ifr, 0, sizeof(ifr));
    }
    if (want && *want && strcmp(want, found)) {
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", found);
        snprintf(ifr.ifr_newname, IFNAMSIZ, "%s", want);
        if (if_ioctl(s, SIOCSIFNAME, &ifr, "rename", err, ecap)) return -1;
        snprintf(found, sizeof(found), "%s", want);
    }
    long long mtu = jgeti(nic, "mtu", 0);
    if (mtu > 0) {
        memset(&ifr, 0, sizeof(ifr));
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", found);
        ifr.ifr_mtu = (int)mtu;
        if (if_ioctl(s, SIOCSIFMTU, &ifr, "mtu", err, ecap)) return -1;
    }
    jnode *addrs = jget(nic, "addresses");
    if (addrs && addrs->child && addrs->child->t == J_STR) {
        char a[64];
        snprintf(a, sizeof(a), "%s", addrs->child->s);
        char *slash = strchr(a, '/');
        int prefix = slash ? atoi(slash + 1) : 24;
        if (slash) *slash = 0;
        struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
        memset(&ifr, 0, sizeof(ifr));
        snprintf(ifr.ifr_name, IFNAMSIZ, "%s", found);
        sin->sin_family = AF_INET;
        if (inet_pton(AF_INET, a, &sin->sin_addr) != 1) { snprintf(err, ecap, "bad address %s", a); return -1; }
        if (if_ioctl(s, SIOCSIFADDR, &ifr, "address", err, ecap)) return -1;
        sin->sin_addr.s_addr = prefix ? htonl(0xFFFFFFFFu << (32 - prefix)) : 0;
        if (if_ioctl(s, SIOCSIFNETMASK, &ifr, "netmask", err, ecap)) return -1;
    }
    if (set_up(s, found, err, ecap)) return -1;
    const char *gw = jgets(nic, "gateway");
    if (gw && *gw) {
        struct rtentry rt;
        memset(&rt, 0, sizeof(rt));
        struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst, *g = (struct sockaddr_in *)&rt.rt_gateway,
                           *m = (struct sockaddr_in *)&rt.rt_genmask;
        dst->sin_family = g->sin_family = m->sin_family = AF_INET;
        inet_pton(AF_INET, gw, &g->sin_addr);
        rt.rt_flags = RTF_UP | RTF_GATEWAY;
        rt.rt_dev = found;
        if (ioctl(s, SIOCADDRT, &rt) && errno != EEXIST) { snprintf(err, ecap, "default route via %s: %s", gw, strerror(errno)); return -1; }
    }
    return 0;
}

static void write_etc(const char *name, const char *content)
{
    if (!content) return;
    char p[128];
    mkdir_p("/run/sandbox", 0755);
    snprintf(p, sizeof(p), "/run/sandbox/%s", name);
    write_file(p, content);
}

void h_hello(uint64_t id, jnode *req, const void *payload, size_t plen)
{
    long long host_ns = jgeti(req, "hostTime", 0);
    if (host_ns > 0) {
        struct timespec ts = {(time_t)(host_ns / 1000000000LL), (long)(host_ns % 1000000000LL)};
        if (clock_settime(CLOCK_REALTIME, &ts)) logmsg("set clock: %s", strerror(errno));
    }
    if (plen > 0 && plen <= 512) {
        /* fresh entropy for this VM (a restored template would otherwise share its random state) */
        struct { int count, size; unsigned char buf[512]; } rp;
        rp.count = (int)plen * 8;
        rp.size = (int)plen;
        memcpy(rp.buf, payload, plen);
        int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || ioctl(fd, RNDADDENTROPY, &rp)) logmsg("add entropy: %s", strerror(errno));
        else if (ioctl(fd, RNDRESEEDCRNG, 0)) logmsg("reseed: %s", strerror(errno));
        if (fd >= 0) close(fd);
    }
    sb m = {0};
    sb_printf(&m, "\"version\":%d,\"agentVersion\":\"%s\",\"capabilities\":[\"containers\",\"exec\",\"tty\",\"port-forward\","
                  "\"logs\",\"stats\",\"files\",\"volumes\",\"attach-stdin\"%s],",
              PV_PROTOCOL_VERSION, PV_AGENT_VERSION, ephemeral_quota ? ",\"volume-quota\"" : "");
    sb_printf(&m, "\"boot\":{\"initStartMs\":%lld,\"modulesMs\":%lld,\"agentReadyMs\":%lld,\"helloMs\":%lld},",
              t_init_start_ms, t_modules_ms, t_agent_ready_ms, now_boottime_ms());
    sb_puts(&m, "\"hostname\":");
    sb_jstr(&m, sandbox_hostname);
    sb_puts(&m, ",\"containers\":");
    containers_status_json(&m);
    reply_ok(id, m.b);
    sb_free(&m);
}

void h_setup_sandbox(uint64_t id, jnode *req)
{
    char err[512] = "";
    const char *hn = jgets(req, "hostname");
    if (hn && *hn) {
        snprintf(sandbox_hostname, sizeof(sandbox_hostname), "%s", hn);
        if (sethostname(hn, strlen(hn))) logmsg("sethostname: %s", strerror(errno));
        char line[300];
        snprintf(line, sizeof(line), "%s\n", hn);
        write_etc("hostname", line);
    }
    if (jgets(req, "hosts")) {
        write_etc("hosts", jgets(req, "hosts"));
    } else {
        /* what a kubelet would write for a pod without hostAliases, minus the pod IP line */
        char hosts[512];
        snprintf(hosts, sizeof(hosts), "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n");
        write_etc("hosts", hosts);
    }
    write_etc("resolv.conf", jgets(req, "resolvConf"));
    sb m = {0};
    sb_puts(&m, "\"disks\":[");
    jnode *disks = jget(req, "disks");
    int first = 1;
    /* the ephemeral disk first: image mounts do not depend on it, but containers do */
    for (int pass = 0; pass < 2; pass++) {
        if (disks) for (jnode *d = disks->child; d; d = d->next) {
            const char *did = jgets(d, "id"), *kind = jgets(d, "kind");
            if (!did || !kind || (!strcmp(kind, "ephemeral")) != (pass == 0)) continue;
            if (strcmp(kind, "ephemeral") && strcmp(kind, "image")) continue;
            if (!first) sb_puts(&m, ",");
            if (mount_disk(did, kind, &m, err, sizeof(err))) { sb_free(&m); reply_err(id, "Internal", "%s", err); return; }
            first = 0;
        }
    }
    sb_puts(&m, "]");
    jnode *nics = jget(req, "interfaces");
    if (nics && nics->child) {
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        for (jnode *n = nics->child; n; n = n->next)
            if (configure_nic(s, n, err, sizeof(err))) { close(s); sb_free(&m); reply_err(id, "Internal", "%s", err); return; }
        close(s);
    }
    reply_ok(id, m.b);
    sb_free(&m);
}

void h_attach_disk(uint64_t id, jnode *req)
{
    char err[512];
    const char *did = jgets(req, "id"), *kind = jgets(req, "kind");
    sb m = {0};
    sb_puts(&m, "\"disk\":");
    if (!did || mount_disk(did, kind ? kind : "image", &m, err, sizeof(err))) {
        reply_err(id, "NotFound", "%s", did ? err : "disk id required");
    } else {
        reply_ok(id, m.b);
    }
    sb_free(&m);
}

static int resolve_path(const char *rel, char *out, size_t cap)
{
    if (!rel) return -1;
    if (rel[0] == '/') {
        if (strncmp(rel, "/run/", 5) || strstr(rel, "/../")) return -1;
        snprintf(out, cap, "%s", rel);
        return 0;
    }
    return safe_join(out, cap, pod_root, rel);
}

void h_create_volume(uint64_t id, jnode *req)
{
    const char *name = jgets(req, "name"), *medium = jgets(req, "medium");
    long long limit = jgeti(req, "sizeLimitBytes", 0);
    if (!name || !*name || strchr(name, '/')) { reply_err(id, "InvalidArgument", "volume name required"); return; }
    char dir[400];
    int quota = 0;
    if (medium && !strcasecmp(medium, "Memory")) {
        snprintf(dir, sizeof(dir), "/run/volumes/%s", name);
        mkdir_p(dir, 0777);
        char opts[64];
        snprintf(opts, sizeof(opts), "mode=1777%s", "");
        if (limit > 0) snprintf(opts, sizeof(opts), "mode=1777,size=%lld", limit);
        if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) && errno != EBUSY) {
            reply_err(id, "Internal", "tmpfs for %s: %s", name, strerror(errno));
            return;
        }
        quota = limit > 0;
    } else {
        snprintf(dir, sizeof(dir), "%s/volumes/%s", pod_root, name);
        if (mkdir_p(dir, 0777)) { reply_err(id, "Internal", "volume %s: %s", name, strerror(errno)); return; }
        chmod(dir, 0777);
        if (limit > 0 && ephemeral_quota) {
            int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            struct fsxattr fa;
            if (fd >= 0 && !ioctl(fd, FS_IOC_FSGETXATTR, &fa)) {
                if (!fa.fsx_projid) fa.fsx_projid = (unsigned)next_projid++;
                fa.fsx_xflags |= FS_XFLAG_PROJINHERIT;
                struct dqblk dq;
                memset(&dq, 0, sizeof(dq));
                dq.dqb_bhardlimit = (unsigned long long)(limit + 1023) / 1024;
                dq.dqb_valid = QIF_BLIMITS;
                if (!ioctl(fd, FS_IOC_FSSETXATTR, &fa) &&
                    !quotactl(QCMD(Q_SETQUOTA, PRJQUOTA), ephemeral_dev, (int)fa.fsx_projid, (caddr_t)&dq))
                    quota = 1;
                else logmsg("quota for %s: %s", name, strerror(errno));
            }
            if (fd >= 0) close(fd);
        }
    }
    sb m = {0};
    sb_puts(&m, "\"path\":");
    sb_jstr(&m, dir);
    sb_printf(&m, ",\"limitEnforced\":%s", quota ? "true" : "false");
    reply_ok(id, m.b);
    sb_free(&m);
}

void h_write_file(uint64_t id, jnode *req, const void *payload, size_t plen)
{
    char path[600], tmp[700];
    if (resolve_path(jgets(req, "path"), path, sizeof(path))) { reply_err(id, "InvalidArgument", "bad path"); return; }
    char dir[600];
    snprintf(dir, sizeof(dir), "%s", path);
    char *sl = strrchr(dir, '/');
    if (sl) { *sl = 0; mkdir_p(dir, 0755); }
    if (jgetb(req, "directory", 0)) {
        if (mkdir_p(path, (mode_t)jgeti(req, "mode", 0755))) { reply_err(id, "Internal", "mkdir %s: %s", path, strerror(errno)); return; }
        chmod(path, (mode_t)jgeti(req, "mode", 0755));
        reply_ok(id, "");
        return;
    }
    const char *link = jgets(req, "symlink");
    snprintf(tmp, sizeof(tmp), "%s.pv-tmp", path);
    unlink(tmp);
    if (link) {
        if (symlink(link, tmp) || rename(tmp, path)) { reply_err(id, "Internal", "symlink %s: %s", path, strerror(errno)); return; }
        reply_ok(id, "");
        return;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)jgeti(req, "mode", 0644));
    if (fd < 0) { reply_err(id, "Internal", "write %s: %s", path, strerror(errno)); return; }
    const char *p = payload;
    size_t left = plen;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) { close(fd); unlink(tmp); reply_err(id, "Internal", "write %s: %s", path, strerror(errno)); return; }
        p += w;
        left -= (size_t)w;
    }
    fchmod(fd, (mode_t)jgeti(req, "mode", 0644));
    if (jget(req, "uid")) { if (fchown(fd, (uid_t)jgeti(req, "uid", 0), (gid_t)jgeti(req, "gid", 0))) { } }
    close(fd);
    if (rename(tmp, path)) { reply_err(id, "Internal", "rename %s: %s", path, strerror(errno)); return; }
    reply_ok(id, "");
}

void h_remove_path(uint64_t id, jnode *req)
{
    char path[600];
    if (resolve_path(jgets(req, "path"), path, sizeof(path)) || !strcmp(path, pod_root)) {
        reply_err(id, "InvalidArgument", "bad path");
        return;
    }
    umount2(path, MNT_DETACH);
    if (rm_rf(path)) { reply_err(id, "Internal", "remove %s: %s", path, strerror(errno)); return; }
    reply_ok(id, "");
}

void power_off(void)
{
    for (container *c = containers; c; c = c->next)
        if (c->state == 1) kill(c->pid, SIGKILL);
    sync();
    if (*ephemeral_dev) umount2(pod_root, MNT_DETACH);
    sync();
    reboot(RB_POWER_OFF);
    _exit(0);
}

void h_shutdown(uint64_t id, jnode *req)
{
    (void)req;
    reply_ok(id, "");
    usleep(20000);
    power_off();
}
