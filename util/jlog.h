/*
 * jlog.h: the structured log, one JSON object per line: gplqd's on stderr, gplq-worker's on
 * stdout (the pipe its daemon reads and relays).
 *
 * Every line carries "ts" (ISO-8601 UTC with milliseconds) and "level"; the rest are fields of
 * the event (request_id, method, path, status, worker, ...). One line is one write(2), so lines
 * from the HTTP threads, the supervisor and the handlers never interleave.
 */
#ifndef GPLQ_JLOG_H
#define GPLQ_JLOG_H

#include <jansson.h>

#include "util/jtext.h"

/* Writes obj (borrowed; "ts" and "level" are added to it) as one line on stderr. */
void jlog_json(const char *level, json_t *obj);
/* The same line on file descriptor fd (the worker's stdout). */
void jlog_json_fd(int fd, const char *level, json_t *obj);
/* A message line: {"ts", "level", "request_id" (omitted when NULL), "msg"}. */
void jlog(const char *level, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same line written as text, for the hot paths (the access log): jlog_begin starts it in t
 * with "ts" and "level", the caller adds the event's members (util/jtext.h), jlog_end writes
 * it on stderr and releases t. */
void jlog_begin(jtext *t, const char *level);
void jlog_end(jtext *t);
/* A new JSON string of any bytes: s itself when it is UTF-8, else with the non-ASCII and
 * control bytes replaced by '?' (json_string would return NULL). NULL gives JSON null. */
json_t *jlog_str(const char *s);

#endif
