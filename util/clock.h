/*
 * clock.h: the clocks every part reads, and the ISO-8601 UTC text of a wall-clock time.
 *
 * Two clocks for two questions. How long did it take: the monotonic clock (CLOCK_MONOTONIC),
 * which no NTP step or date change moves, in seconds for the engine's timings and in
 * milliseconds for the service's latencies and timers. When did it happen: the wall clock
 * (CLOCK_REALTIME) as Unix milliseconds, which the database stores and the API and the logs
 * print as "2026-11-27T21:20:00.123Z". pthread_cond_timedwait also takes the wall clock, so
 * its deadlines are made here too.
 */
#ifndef GPLQ_CLOCK_H
#define GPLQ_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Room for clock_iso_ms's and clock_iso_s's text, NUL included, for any year. */
#define CLOCK_ISO_MAX 64

/* Monotonic time in seconds and in milliseconds (differences only mean something). */
double clock_mono_s(void);
double clock_mono_ms(void);
/* The wall clock as Unix milliseconds. */
int64_t clock_wall_ms(void);
/* *t = the wall clock ms milliseconds from now: a deadline for pthread_cond_timedwait. */
void clock_deadline(struct timespec *t, long ms);
/* Unix milliseconds ms as "2026-11-27T21:20:00.123Z" into out (CLOCK_ISO_MAX bytes). */
void clock_iso_ms(int64_t ms, char *out);
/* Unix seconds sec as "2026-11-27T21:20:00Z" into out (CLOCK_ISO_MAX bytes). */
void clock_iso_s(int64_t sec, char *out);

#endif
