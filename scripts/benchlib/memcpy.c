/* memcpy bandwidth baseline for scripts/bench: copies BLOCK-byte blocks with
 * memcpy, cycling through SPAN bytes of source and destination, for at least
 * MIN_SECONDS, and prints one JSON line {"bytes":N,"seconds":S}.
 *   memcpy BLOCK SPAN MIN_SECONDS
 * SPAN == BLOCK copies the same block over and over (cache-resident);
 * a SPAN larger than the last-level cache measures copies from and to RAM. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s BLOCK SPAN MIN_SECONDS\n", argv[0]);
        return 2;
    }
    size_t block = strtoull(argv[1], NULL, 10);
    size_t span = strtoull(argv[2], NULL, 10);
    double min_seconds = strtod(argv[3], NULL);
    if (block == 0 || span < block) {
        fprintf(stderr, "memcpy: need 0 < BLOCK <= SPAN\n");
        return 2;
    }
    size_t blocks = span / block;
    char *src = malloc(blocks * block), *dst = malloc(blocks * block);
    if (!src || !dst) {
        fprintf(stderr, "memcpy: out of memory\n");
        return 1;
    }
    /* Touch every page first so page faults are not timed. */
    memset(src, 'x', blocks * block);
    memset(dst, 'y', blocks * block);

    unsigned long long copied = 0;
    size_t i = 0;
    double t0 = now(), t1;
    do {
        for (int k = 0; k < 64; k++) {
            memcpy(dst + i * block, src + i * block, block);
            /* Keep the compiler from dropping or merging the copies. */
            __asm__ __volatile__("" : : "r"(dst) : "memory");
            copied += block;
            if (++i == blocks) i = 0;
        }
        t1 = now();
    } while (t1 - t0 < min_seconds);
    printf("{\"bytes\":%llu,\"seconds\":%.9f}\n", copied, t1 - t0);
    return 0;
}
