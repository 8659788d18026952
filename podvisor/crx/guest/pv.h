/* The Podvisor guest agent: PID 1 of every pod VM.
 *
 * One static binary is both the CRX init (mount, load modules, leave the initramfs) and the guest
 * agent (one framed protocol over a virtio-serial port, see podvisor/crx/protocol.py, which is the
 * source of truth for message names and fields). It is written in C so that a cold boot pays no
 * interpreter start-up under TCG and the guest needs nothing but this file and busybox.
 *
 * Everything runs in one thread around poll(2): the agent port, container output pipes, exec and
 * port-forward streams and a signalfd for SIGCHLD.
 */
#ifndef PV_H
#define PV_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#define PV_PROTOCOL_VERSION 1
#define PV_AGENT_VERSION "0.1.0"
#define PV_PORT_NAME "org.podvisor.agent"
#define PV_MAGIC "PVF1"
#define PV_MAX_HEADER (1u << 20)
#define PV_MAX_PAYLOAD (4u << 20)

/* ---- json.c: a small JSON tree and a string builder ---- */
typedef enum { J_NULL, J_BOOL, J_INT, J_NUM, J_STR, J_ARR, J_OBJ } jtype;
typedef struct jnode {
    jtype t;
    char *key;          /* member name when inside an object */
    char *s;            /* J_STR */
    long long i;        /* J_INT and J_BOOL */
    double n;           /* J_NUM (and J_INT) */
    struct jnode *child, *next;
} jnode;

jnode *json_parse(const char *text, size_t len);
void json_free(jnode *n);
jnode *jget(const jnode *obj, const char *key);
const char *jgets(const jnode *obj, const char *key);
long long jgeti(const jnode *obj, const char *key, long long def);
int jgetb(const jnode *obj, const char *key, int def);
char **jstrv(const jnode *arr); /* NULL-terminated vector of borrowed strings; free() the vector */
int jlen(const jnode *arr);

typedef struct { char *b; size_t n, cap; } sb;
void sb_add(sb *s, const void *p, size_t n);
void sb_puts(sb *s, const char *p);
void sb_printf(sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_jstr(sb *s, const char *str);         /* a quoted, escaped JSON string */
void sb_jstrn(sb *s, const char *str, size_t n);
void sb_free(sb *s);
const char *sb_cstr(sb *s);

/* ---- util.c ---- */
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void logmsg_later(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* on the next idle moment */
int logmsg_pending(void);
void logmsg_flush(void);
long long now_realtime_ns(void);
long long now_boottime_ms(void);
int mkdir_p(const char *path, mode_t mode);
int write_file(const char *path, const char *data);
int read_file(const char *path, char *buf, size_t cap);
long long read_ll(const char *path, const char *key); /* "key value" line file, or whole file if key NULL */
int rm_rf(const char *path);
int safe_join(char *out, size_t cap, const char *root, const char *rel); /* rejects .. escapes */
void rfc3339nano(char *out, size_t cap, long long ns);
int set_nonblock(int fd, int on);

/* ---- loop.c: the event loop and the wire ---- */
typedef struct watch watch;
typedef void (*watch_cb)(watch *w, short revents);
struct watch { int fd; short events; watch_cb cb; void *ctx; int registered; };
void watch_add(watch *w);
void watch_del(watch *w);
void loop_run(int port_fd);
int host_connected(void);
void send_frame(const char *hdr, size_t hlen, const void *payload, size_t plen);
void reply_ok(uint64_t id, const char *members);
void reply_err(uint64_t id, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void send_event(sb *hdr, const void *payload, size_t plen); /* hdr holds members; frees it */

/* ---- streams.c: exec, port-forward and log-follow streams ---- */
typedef struct container container;
void stream_input(const char *sid, const void *data, size_t n);
void stream_close_input(const char *sid);
void stream_cancel(const char *sid);
void streams_drop_all(void);
int stream_reap(pid_t pid, int status);
void streams_log_data(container *c, const char *data, size_t n);
void streams_log_end(container *c);
void streams_attach_data(container *c, int is_err, const char *data, size_t n);
void container_close_stdin(container *c); /* stdinOnce: end the container's stdin */
void h_attach(uint64_t id, jnode *req);
void h_exec(uint64_t id, jnode *req);
void h_resize(uint64_t id, jnode *req);
void h_port_forward(uint64_t id, jnode *req);
void h_read_log(uint64_t id, jnode *req);
void h_signal_exec(uint64_t id, jnode *req);

/* ---- container.c and child.c ---- */
struct container {
    char id[96], name[96];
    jnode *spec;
    int state; /* 0 created, 1 running, 2 exited */
    pid_t pid;
    int exit_code, oom, start_error;
    char reason[32], message[256];
    long long created_ns, started_ns, finished_ns;
    char rootfs[256], upper[256], work[256], cgroup[256], log_path[512], image_dir[256];
    int out_fd, err_fd, in_fd, tty, log_fd;
    watch wout, werr;
    sb pend_out, pend_err; /* partial lines */
    int mntns_fd, pidns_fd;
    uint64_t *waiters;
    int nwaiters;
    container *next;
};
extern container *containers;
container *container_find(const char *id);
int container_reap(pid_t pid, int status);
void containers_status_json(sb *out);
void container_status_json(sb *out, container *c);
void container_child(container *c, int errfd, int in, int out, int err, int tty_slave);
void exec_in_container(container *c, int errfd, int in, int out, int err, int tty_slave, char **args, char **env,
                       const char *cwd, jnode *user);
void h_create_container(uint64_t id, jnode *req);
void h_start_container(uint64_t id, jnode *req);
void h_signal_container(uint64_t id, jnode *req);
void h_wait_container(uint64_t id, jnode *req);
void h_remove_container(uint64_t id, jnode *req);
void h_list_containers(uint64_t id, jnode *req);
void h_stats(uint64_t id, jnode *req);
void containers_drop_waiters(void);

/* ---- guest.c: the sandbox (disks, network, files) ---- */
extern char pod_root[];   /* where the ephemeral disk is mounted */
extern char sandbox_hostname[];
void h_hello(uint64_t id, jnode *req, const void *payload, size_t plen);
void h_setup_sandbox(uint64_t id, jnode *req);
void h_attach_disk(uint64_t id, jnode *req);
void h_create_volume(uint64_t id, jnode *req);
void h_write_file(uint64_t id, jnode *req, const void *payload, size_t plen);
void h_remove_path(uint64_t id, jnode *req);
void h_shutdown(uint64_t id, jnode *req);
void h_prepare_template(uint64_t id, jnode *req);
const char *image_mount_dir(const char *disk_id);
int find_disk_by_serial(const char *serial, char *dev, size_t cap);

/* ---- init.c ---- */
extern long long t_init_start_ms, t_modules_ms, t_agent_ready_ms;
extern int pv_debug;
void power_off(void);
void load_module_group(const char *group);

#endif
