/* The bare init: prints one line and powers off. Used to probe whether KVM boots our kernel, and as the
 * "bare cold boot" that `podvisor bench vm` compares a pod VM against. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/reboot.h>
#include <unistd.h>

int main(void)
{
    char msg[96];
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    int n = snprintf(msg, sizeof(msg), "PODVISOR-PROBE-OK %lld\n", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    int fd = open("/dev/ttyS0", O_WRONLY | O_NOCTTY);
    if (fd < 0) fd = open("/dev/console", O_WRONLY | O_NOCTTY);
    if (fd < 0) fd = 1;
    if (write(fd, msg, (size_t)n) < 0) { }
    fsync(fd);
    reboot(RB_POWER_OFF);
    return 0;
}
