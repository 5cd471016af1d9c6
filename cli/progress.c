/*
 * progress.c: see progress.h.
 */
#include "cli/progress.h"

#include <stdarg.h>
#include <unistd.h>

#include "util/clock.h"

void progress_init(progress_bar *p, FILE *out, double every_s) {
    p->out = out;
    p->tty = isatty(fileno(out));
    p->every_s = every_s;
    p->last = -1e9;
    p->drawn = 0;
}

void progress_update(progress_bar *p, double fraction, int force, const char *fmt, ...) {
    double t = clock_mono_s();
    if (!force && t - p->last < (p->tty ? 0.1 : p->every_s)) return;
    p->last = t;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (fraction < 0) fraction = 0;
    if (fraction > 1) fraction = 1;
    if (p->tty) {
        char bar[21];
        int fill = (int)(fraction * 20 + 0.5);
        for (int i = 0; i < 20; i++) bar[i] = i < fill ? '#' : ' ';
        bar[20] = 0;
        fprintf(p->out, "\r\033[K[%s] %3.0f%% %s", bar, fraction * 100, text);
        p->drawn = 1;
    } else {
        fprintf(p->out, "%3.0f%% %s\n", fraction * 100, text);
    }
    fflush(p->out);
}

void progress_line(progress_bar *p, const char *fmt, ...) {
    if (p->drawn) fputs("\r\033[K", p->out);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->out, fmt, ap);
    va_end(ap);
    fputc('\n', p->out);
    fflush(p->out);
    p->drawn = 0;
    p->last = -1e9; /* redraw the bar right away */
}

void progress_done(progress_bar *p) {
    if (p->drawn) fputc('\n', p->out);
    p->drawn = 0;
    fflush(p->out);
}

void progress_fmt_duration(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) snprintf(buf, n, "?");
    else if (s >= 3600) snprintf(buf, n, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
    else if (s >= 60) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, n, "%ds", (int)s);
}
