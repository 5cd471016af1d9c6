/*
 * imgmsg.h: the messages of the image-folder modules (io/imagefolder.c and the io/img*.c it
 * is made of). Member names come from the uploader and messages end up in JSON responses, so
 * every message these modules return is made valid UTF-8 without control characters here, and
 * a quoted member name is cut short before it can crowd the reason out.
 */
#ifndef GPLQ_IMGMSG_H
#define GPLQ_IMGMSG_H

#include <stddef.h>

#define IMGMSG_NAME_SHOWN 200                   /* bytes of a member name quoted in a message */
#define IMGMSG_NAME_BUF (IMGMSG_NAME_SHOWN + 4) /* room for imgmsg_name's output */

/* Formats the message into err (errlen bytes, caller's buffer; nothing happens when err is
 * NULL or errlen 0), then rewrites it in place: control characters and bytes that are not
 * UTF-8 become '?', which also repairs a character cut in half by the buffer's end. */
__attribute__((format(printf, 3, 4))) void imgmsg_err(char *err, size_t errlen,
                                                      const char *fmt, ...);

/* A member name as quoted in messages, into out (outlen bytes, IMGMSG_NAME_BUF for the usual
 * cut): at most outlen - 4 bytes of name (borrowed), cut on a character boundary and then
 * followed by "...". Bytes that are not UTF-8 are copied; imgmsg_err turns them into '?'. */
void imgmsg_name(char *out, size_t outlen, const char *name);

#endif
