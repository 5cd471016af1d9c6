/*
 * progress.h: one progress line for long work. On a terminal it redraws itself in place (at
 * most 10 times a second); otherwise it prints a plain line every `every_s` seconds, so logs
 * and pipes get a readable record instead of carriage returns.
 */
#ifndef GPLQ_PROGRESS_H
#define GPLQ_PROGRESS_H

#include <stdio.h>

typedef struct {
    FILE *out;
    int tty;
    double every_s;     /* plain mode: seconds between lines */
    double last;        /* time of the last line drawn */
    int drawn;          /* a tty line is on screen, unterminated */
} progress_bar;

void progress_init(progress_bar *p, FILE *out, double every_s);
/* Draws "[####    ] 42% text" (fraction in [0, 1]) unless too soon; force draws anyway. */
void progress_update(progress_bar *p, double fraction, int force, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Prints a full line of its own (ending an in-place line first). */
void progress_line(progress_bar *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends the in-place line. */
void progress_done(progress_bar *p);
/* "1h02m", "3m05s", "12s" */
void progress_fmt_duration(char *buf, size_t n, double s);

#endif
