/*
 * inspect.h: the upload checks gplqd runs as `gplq-worker inspect-model|inspect-dataset`
 * (see inspect.c for the output protocol). Each returns the process exit code.
 */
#ifndef GPLQ_WORKER_INSPECT_H
#define GPLQ_WORKER_INSPECT_H

int inspect_model_main(int argc, char **argv);
int inspect_dataset_main(int argc, char **argv);

#endif
