/*
 * mem.h: the process's resident-memory high-water mark, overall and phase by phase.
 *
 * Linux keeps the peak resident set of a process (VmHWM in /proc/self/status) and lets the
 * process restart it from the current resident set (writing "5" to /proc/self/clear_refs), so
 * a long run can say what each of its phases held at most. getrusage's ru_maxrss reads the
 * same mark and restarts with it: after mem_peak_restart, the overall peak is the largest of
 * the phases' peaks.
 */
#ifndef GPLQ_MEM_H
#define GPLQ_MEM_H

/* The high-water mark in kB: the process's peak resident set since it started or since the
 * last mem_peak_restart. -1 where /proc cannot tell. */
long mem_peak_kb(void);
/* Restarts the high-water mark from the current resident set. 0, or -1 where the kernel does
 * not allow it (no /proc, an old kernel, a sandbox): then mem_peak_kb keeps counting from the
 * start and per-phase peaks cannot be told apart. */
int mem_peak_restart(void);

#endif
