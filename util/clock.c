/*
 * clock.c: see clock.h.
 */
#include "util/clock.h"

#include <stdio.h>

double clock_mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double clock_mono_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int64_t clock_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void clock_deadline(struct timespec *t, long ms) {
    clock_gettime(CLOCK_REALTIME, t);
    t->tv_sec += ms / 1000;
    t->tv_nsec += (ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) t->tv_sec++, t->tv_nsec -= 1000000000L;
}

/* Unix seconds t as ISO-8601 UTC into out, frac (".123" or "") just before the Z. */
static void iso(time_t t, const char *frac, char *out) {
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, CLOCK_ISO_MAX, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

void clock_iso_ms(int64_t ms, char *out) {
    time_t t = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) { /* before 1970: the milliseconds count up from the second before */
        frac += 1000;
        t -= 1;
    }
    char f[8];
    snprintf(f, sizeof f, ".%03d", frac);
    iso(t, f, out);
}

void clock_iso_s(int64_t sec, char *out) { iso((time_t)sec, "", out); }
