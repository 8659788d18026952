/* Prints the host's TSC frequency in kHz. Under TCG a guest's TSC runs at the host's rate, and the
 * guest kernel's own calibration against the PIT fails now and then under emulation (it then hangs
 * early in boot), so hostd passes tsc_early_khz= from this measurement. */
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_RAW, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(void)
{
    double best = 0;
    for (int i = 0; i < 3; i++) {
        double t0 = now();
        unsigned long long c0 = __rdtsc();
        struct timespec s = {0, 20000000};
        nanosleep(&s, 0);
        double t1 = now();
        unsigned long long c1 = __rdtsc();
        double khz = (double)(c1 - c0) / (t1 - t0) / 1000.0;
        if (i == 0 || khz < best) best = khz;
    }
    printf("%.0f\n", best);
    return 0;
}
