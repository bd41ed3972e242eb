/*
 * sample.h - for the msgpack harnesses' dump mode: a message of every type
 * of messages.def with every field set, filled from the table itself (a
 * new type or field is in the seed corpus without an edit here), and the
 * writing of one seed file. Included by one harness each: static functions.
 */
#ifndef IMAGEJOBS_FUZZ_SAMPLE_H
#define IMAGEJOBS_FUZZ_SAMPLE_H

#include "messages/message.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE_UUID "0b9f3c2e-6d1a-4c8e-9f7b-2a5d4e6f8a1c"
#define SAMPLE_ORIGIN "instance-a"

/* type with every field set: strings a UUID (what most of them carry),
 * enumerations their last value, numbers small but not zero. */
static msg_t *sample_message(msg_type_t type)
{
    msg_t *m = msg_new(type);
    m->flags = MSG_FLAG_EVENT;
    m->corr = 7;
    snprintf(m->sender, sizeof m->sender, "fuzz");
    switch (type) {
#define FIELD_U64(f) b->f = 42;
#define FIELD_I64(f) b->f = 1764547200000000LL;
#define FIELD_F64(f) b->f = 0.5;
#define FIELD_BOOL(f) b->f = true;
#define FIELD_STR(f) msg_set_str(&b->f, SAMPLE_UUID);
#define FIELD_BIN(f) msg_set_bin(&b->f, "\x89PNG\r\n\x1a\n", 8);
#define FIELD_ENUM(f, e) b->f = (e##_t)(e##_COUNT_OF - 1);
#define MSG(TYPE, name, fields)                                                                    \
    case MSG_##TYPE: {                                                                             \
        msg_##name##_t *b = &m->name;                                                              \
        (void)b;                                                                                   \
        fields                                                                                     \
    } break;
#include "messages/messages.def"
#undef MSG
#undef FIELD_U64
#undef FIELD_I64
#undef FIELD_F64
#undef FIELD_BOOL
#undef FIELD_STR
#undef FIELD_BIN
#undef FIELD_ENUM
    default:
        break;
    }
    return m;
}

/* Writes size bytes (prefix byte first when prefix >= 0) to dir/name. */
static void sample_write(const char *dir, const char *name, int prefix, const void *data,
                         size_t size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (prefix >= 0 && fputc(prefix, f) == EOF) || fwrite(data, 1, size, f) != size
        || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

/* Encodes m into dir/name (and frees m). */
static void sample_dump(const char *dir, const char *name, int prefix, msg_t *m)
{
    void *data;
    size_t size;
    if (msg_encode(m, &data, &size) < 0) {
        fprintf(stderr, "cannot encode a %s\n", msg_type_name(m->type));
        exit(1);
    }
    sample_write(dir, name, prefix, data, size);
    free(data);
    msg_destroy(&m);
}

#endif
