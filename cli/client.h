/*
 * client.h: `gplq submit`, `gplq jobs`, `gplq cancel`, `gplq artifacts`: the command-line
 * client of a gplqd server, for people and for pipelines (exit status 0 only when the job
 * succeeded). HTTP with libcurl. Each returns the process exit code: 0 ok, 1 the job or a
 * request failed, 2 bad usage.
 */
#ifndef GPLQ_CLIENT_H
#define GPLQ_CLIENT_H

int client_submit(int argc, char **argv);
int client_jobs(int argc, char **argv);
int client_cancel(int argc, char **argv);
int client_artifacts(int argc, char **argv);

#endif
