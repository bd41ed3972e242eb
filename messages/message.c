/*
 * message.c - msgpack codec for every message in messages.def.
 *
 * Encoding uses msgpack-c's packer. Decoding runs in two passes on purpose:
 * msgpack-c's unpacker allocates memory for an array or map from the count in
 * its header before it has seen the elements, so five hostile bytes declaring
 * 2^32 elements would ask for ~100 GB. s_wellformed() first walks every header
 * and rejects a count larger than the bytes left, a truncated item or trailing
 * garbage; only a buffer that passes it reaches msgpack_unpack_next(), whose
 * allocations are then bounded by the buffer's size. The object tree is then
 * checked field by field against the table: exact types, exact counts.
 */
#include "config.h"

#include "messages/message.h"

#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *s_xmalloc(size_t size)
{
    void *p = calloc(1, size ? size : 1);
    if (!p)
        abort();
    return p;
}

/* ---------------------------------------------------------------- names */

static const char *const s_names[MSG_TYPE_COUNT] = {
#define MSG(TYPE, name, fields) #name,
#include "messages/messages.def"
#undef MSG
};

const char *msg_type_name(unsigned type)
{
    return type < MSG_TYPE_COUNT ? s_names[type] : "unknown";
}

/* The enumerations' texts and their two functions each. */
#define VALUE(CONSTANT, text) text,
#define ENUM(PREFIX, name, values)                                                                 \
    static const char *const s_##name##_texts[PREFIX##_COUNT] = {values};                          \
    const char *name##_name(name##_t v)                                                            \
    {                                                                                              \
        return (unsigned)v < PREFIX##_COUNT ? s_##name##_texts[v] : "unknown";                     \
    }                                                                                              \
    int name##_parse(const char *s, size_t len, name##_t *out)                                     \
    {                                                                                              \
        for (unsigned i = 0; i < PREFIX##_COUNT; i++)                                              \
            if (strlen(s_##name##_texts[i]) == len && memcmp(s_##name##_texts[i], s, len) == 0) {  \
                *out = (name##_t)i;                                                                \
                return 0;                                                                          \
            }                                                                                      \
        return -1;                                                                                 \
    }
#include "messages/messages.def"
#undef ENUM
#undef VALUE

/* Number of body fields of each type. */
#define FIELD_U64(f) +1
#define FIELD_I64(f) +1
#define FIELD_F64(f) +1
#define FIELD_BOOL(f) +1
#define FIELD_STR(f) +1
#define FIELD_BIN(f) +1
#define FIELD_ENUM(f, e) +1
static const unsigned s_field_count[MSG_TYPE_COUNT] = {
#define MSG(TYPE, name, fields) 0 fields,
#include "messages/messages.def"
#undef MSG
};
#undef FIELD_U64
#undef FIELD_I64
#undef FIELD_F64
#undef FIELD_BOOL
#undef FIELD_STR
#undef FIELD_BIN
#undef FIELD_ENUM

/* ------------------------------------------------------------ lifecycle */

msg_t *msg_new(msg_type_t type)
{
    msg_t *msg = s_xmalloc(sizeof *msg);
    msg->type = type;
    return msg;
}

#define FIELD_U64(f)
#define FIELD_I64(f)
#define FIELD_F64(f)
#define FIELD_BOOL(f)
#define FIELD_STR(f) free(body->f);
#define FIELD_BIN(f) free(body->f.data);
#define FIELD_ENUM(f, e)
#define MSG(TYPE, name, fields)                                                                    \
    static void s_free_##name(msg_##name##_t *body)                                                \
    {                                                                                              \
        (void)body;                                                                                \
        fields                                                                                     \
    }
#include "messages/messages.def"
#undef MSG
#undef FIELD_U64
#undef FIELD_I64
#undef FIELD_F64
#undef FIELD_BOOL
#undef FIELD_STR
#undef FIELD_BIN
#undef FIELD_ENUM

void msg_destroy(msg_t **msgp)
{
    msg_t *msg = *msgp;
    if (!msg)
        return;
    switch (msg->type) {
#define MSG(TYPE, name, fields)                                                                    \
    case MSG_##TYPE:                                                                               \
        s_free_##name(&msg->name);                                                                 \
        break;
#include "messages/messages.def"
#undef MSG
    default:
        break;
    }
    free(msg);
    *msgp = NULL;
}

void msg_set_str(char **field, const char *s)
{
    free(*field);
    *field = NULL;
    if (s) {
        size_t n = strlen(s);
        *field = s_xmalloc(n + 1);
        memcpy(*field, s, n);
    }
}

void msg_set_bin(msg_bin_t *field, const void *data, size_t size)
{
    free(field->data);
    field->data = NULL;
    field->size = 0;
    if (size) {
        field->data = s_xmalloc(size);
        memcpy(field->data, data, size);
        field->size = size;
    }
}

/* --------------------------------------------------------------- encode */

static void s_pack_str(msgpack_packer *pk, const char *s)
{
    if (!s) {
        msgpack_pack_nil(pk);
        return;
    }
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void s_pack_bin(msgpack_packer *pk, const msg_bin_t *b)
{
    msgpack_pack_bin(pk, b->size);
    if (b->size)
        msgpack_pack_bin_body(pk, b->data, b->size);
}

#define FIELD_U64(f) msgpack_pack_uint64(pk, body->f);
#define FIELD_I64(f) msgpack_pack_int64(pk, body->f);
#define FIELD_F64(f) msgpack_pack_double(pk, body->f);
#define FIELD_BOOL(f) body->f ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
#define FIELD_STR(f) s_pack_str(pk, body->f);
#define FIELD_BIN(f) s_pack_bin(pk, &body->f);
#define FIELD_ENUM(f, e) msgpack_pack_unsigned_int(pk, (unsigned)body->f);
#define MSG(TYPE, name, fields)                                                                    \
    static void s_pack_##name(msgpack_packer *pk, const msg_##name##_t *body)                      \
    {                                                                                              \
        msgpack_pack_array(pk, s_field_count[MSG_##TYPE]);                                         \
        fields                                                                                     \
    }
#include "messages/messages.def"
#undef MSG
#undef FIELD_U64
#undef FIELD_I64
#undef FIELD_F64
#undef FIELD_BOOL
#undef FIELD_STR
#undef FIELD_BIN
#undef FIELD_ENUM

int msg_encode(const msg_t *msg, void **data, size_t *size)
{
    if ((unsigned)msg->type >= MSG_TYPE_COUNT)
        return -1;
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);

    msgpack_pack_array(&pk, 5);
    msgpack_pack_uint32(&pk, (uint32_t)msg->type);
    msgpack_pack_uint32(&pk, msg->flags);
    msgpack_pack_uint64(&pk, msg->corr);
    s_pack_str(&pk, msg->sender);
    switch (msg->type) {
#define MSG(TYPE, name, fields)                                                                    \
    case MSG_##TYPE:                                                                               \
        s_pack_##name(&pk, &msg->name);                                                            \
        break;
#include "messages/messages.def"
#undef MSG
    default:
        break;
    }
    if (!sbuf.data) /* msgpack-c aborts nothing on OOM; be explicit */
        abort();
    *size = sbuf.size;
    *data = msgpack_sbuffer_release(&sbuf);
    return 0;
}

/* --------------------------------------------------------------- decode */

static void s_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint64_t s_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Walks every msgpack header in buf without allocating. Returns 0 when buf
 * holds exactly one complete object whose declared counts and lengths all
 * fit in the bytes present, -1 otherwise. */
static int s_wellformed(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    const uint8_t *p = buf, *end = buf + len;
    uint64_t pending = 1; /* objects still to read */

    while (pending > 0) {
        if (p >= end) {
            s_err(err, errlen, "truncated message");
            return -1;
        }
        uint8_t b = *p;
        size_t head = 1;   /* header bytes, including b */
        uint64_t body = 0; /* payload bytes after the header */
        uint64_t children = 0;

        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool */
        } else if (b <= 0x8f) {
            children = 2u * (b & 0x0f);
        } else if (b <= 0x9f) {
            children = b & 0x0f;
        } else if (b <= 0xbf) {
            body = b & 0x1f;
        } else {
            static const struct {
                uint8_t lenbytes; /* size of the length/count field */
                uint8_t fixed;    /* fixed payload (numbers, fixext) */
                uint8_t kind;     /* 0 scalar, 1 bytes, 2 array, 3 map */
            } f[] = {
                [0xc4 - 0xc4] = {1, 0, 1}, [0xc5 - 0xc4] = {2, 0, 1}, [0xc6 - 0xc4] = {4, 0, 1},
                [0xc7 - 0xc4] = {1, 1, 1}, [0xc8 - 0xc4] = {2, 1, 1}, [0xc9 - 0xc4] = {4, 1, 1},
                [0xca - 0xc4] = {0, 4, 0}, [0xcb - 0xc4] = {0, 8, 0}, [0xcc - 0xc4] = {0, 1, 0},
                [0xcd - 0xc4] = {0, 2, 0}, [0xce - 0xc4] = {0, 4, 0}, [0xcf - 0xc4] = {0, 8, 0},
                [0xd0 - 0xc4] = {0, 1, 0}, [0xd1 - 0xc4] = {0, 2, 0}, [0xd2 - 0xc4] = {0, 4, 0},
                [0xd3 - 0xc4] = {0, 8, 0}, [0xd4 - 0xc4] = {0, 2, 0}, [0xd5 - 0xc4] = {0, 3, 0},
                [0xd6 - 0xc4] = {0, 5, 0}, [0xd7 - 0xc4] = {0, 9, 0}, [0xd8 - 0xc4] = {0, 17, 0},
                [0xd9 - 0xc4] = {1, 0, 1}, [0xda - 0xc4] = {2, 0, 1}, [0xdb - 0xc4] = {4, 0, 1},
                [0xdc - 0xc4] = {2, 0, 2}, [0xdd - 0xc4] = {4, 0, 2}, [0xde - 0xc4] = {2, 0, 3},
                [0xdf - 0xc4] = {4, 0, 3},
            };
            if (b == 0xc1) {
                s_err(err, errlen, "invalid msgpack byte 0xc1");
                return -1;
            }
            unsigned i = b - 0xc4;
            head += f[i].lenbytes;
            if ((size_t)(end - p) < head) {
                s_err(err, errlen, "truncated message");
                return -1;
            }
            uint64_t n = s_be(p + 1, f[i].lenbytes);
            body = f[i].fixed;
            if (f[i].kind == 1)
                body += n;
            else if (f[i].kind == 2)
                children = n;
            else if (f[i].kind == 3)
                children = 2 * n;
        }
        if ((uint64_t)(end - p) < head || (uint64_t)(end - p) - head < body) {
            s_err(err, errlen, "truncated message");
            return -1;
        }
        p += head + body;
        /* every child takes at least one byte: a count past the bytes left
         * is a lie, and would make the unpacker allocate for it */
        if (children > (uint64_t)(end - p)) {
            s_err(err, errlen, "container count exceeds message size");
            return -1;
        }
        pending = pending - 1 + children;
    }
    if (p != end) {
        s_err(err, errlen, "%zu trailing bytes after message", (size_t)(end - p));
        return -1;
    }
    return 0;
}

static int s_get_u64(const msgpack_object *o, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -1;
    *out = o->via.u64;
    return 0;
}

static int s_get_i64(const msgpack_object *o, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
        *out = (int64_t)o->via.u64;
        return 0;
    }
    return -1;
}

/* Unused while no message has an F64 field; kept with the vocabulary. */
__attribute__((unused)) static int s_get_f64(const msgpack_object *o, double *out)
{
    if (o->type != MSGPACK_OBJECT_FLOAT64 && o->type != MSGPACK_OBJECT_FLOAT32)
        return -1;
    *out = o->via.f64;
    return 0;
}

static int s_get_enum(const msgpack_object *o, unsigned count, unsigned *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 >= count)
        return -1;
    *out = (unsigned)o->via.u64;
    return 0;
}

static int s_get_bool(const msgpack_object *o, bool *out)
{
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return -1;
    *out = o->via.boolean;
    return 0;
}

/* Strings live in the unpacker's zone and are not NUL-terminated: copy. A
 * NUL inside would silently truncate a C string, so it is rejected. */
static int s_get_str(const msgpack_object *o, char **out)
{
    if (o->type == MSGPACK_OBJECT_NIL) {
        *out = NULL;
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_STR
        || (o->via.str.size && memchr(o->via.str.ptr, 0, o->via.str.size)))
        return -1;
    *out = s_xmalloc(o->via.str.size + 1);
    if (o->via.str.size)
        memcpy(*out, o->via.str.ptr, o->via.str.size);
    return 0;
}

static int s_get_bin(const msgpack_object *o, msg_bin_t *out)
{
    if (o->type != MSGPACK_OBJECT_BIN)
        return -1;
    out->data = NULL;
    out->size = o->via.bin.size;
    if (out->size) {
        out->data = s_xmalloc(out->size);
        memcpy(out->data, o->via.bin.ptr, out->size);
    }
    return 0;
}

#define FIELD_U64(f)                                                                               \
    if (s_get_u64(&o[i++], &body->f) < 0)                                                          \
        return #f;
#define FIELD_I64(f)                                                                               \
    if (s_get_i64(&o[i++], &body->f) < 0)                                                          \
        return #f;
#define FIELD_F64(f)                                                                               \
    if (s_get_f64(&o[i++], &body->f) < 0)                                                          \
        return #f;
#define FIELD_BOOL(f)                                                                              \
    if (s_get_bool(&o[i++], &body->f) < 0)                                                         \
        return #f;
#define FIELD_STR(f)                                                                               \
    if (s_get_str(&o[i++], &body->f) < 0)                                                          \
        return #f;
#define FIELD_BIN(f)                                                                               \
    if (s_get_bin(&o[i++], &body->f) < 0)                                                          \
        return #f;
#define FIELD_ENUM(f, e)                                                                           \
    {                                                                                              \
        unsigned v_;                                                                               \
        if (s_get_enum(&o[i++], e##_COUNT_OF, &v_) < 0)                                            \
            return #f;                                                                             \
        body->f = (e##_t)v_;                                                                       \
    }
/* Each returns NULL, or the name of the first field of the wrong type. */
#define MSG(TYPE, name, fields)                                                                    \
    static const char *s_unpack_##name(const msgpack_object *o, msg_##name##_t *body)              \
    {                                                                                              \
        unsigned i = 0;                                                                            \
        (void)o, (void)body, (void)i;                                                              \
        fields return NULL;                                                                        \
    }
#include "messages/messages.def"
#undef MSG
#undef FIELD_U64
#undef FIELD_I64
#undef FIELD_F64
#undef FIELD_BOOL
#undef FIELD_STR
#undef FIELD_BIN
#undef FIELD_ENUM

static msg_t *s_from_object(const msgpack_object *root, char *err, size_t errlen)
{
    if (root->type != MSGPACK_OBJECT_ARRAY || root->via.array.size != 5) {
        s_err(err, errlen, "envelope is not an array of 5");
        return NULL;
    }
    const msgpack_object *e = root->via.array.ptr;
    uint64_t type, flags, corr;
    if (s_get_u64(&e[0], &type) < 0 || type >= MSG_TYPE_COUNT) {
        s_err(err, errlen, "unknown message type");
        return NULL;
    }
    if (s_get_u64(&e[1], &flags) < 0 || (flags & ~(uint64_t)MSG_FLAGS_KNOWN)) {
        s_err(err, errlen, "bad flags in %s", s_names[type]);
        return NULL;
    }
    if (s_get_u64(&e[2], &corr) < 0) {
        s_err(err, errlen, "bad correlation id in %s", s_names[type]);
        return NULL;
    }
    if (e[3].type != MSGPACK_OBJECT_STR || e[3].via.str.size >= MSG_NAME_MAX
        || (e[3].via.str.size && memchr(e[3].via.str.ptr, 0, e[3].via.str.size))) {
        s_err(err, errlen, "bad sender in %s", s_names[type]);
        return NULL;
    }
    if (e[4].type != MSGPACK_OBJECT_ARRAY || e[4].via.array.size != s_field_count[type]) {
        s_err(err, errlen, "%s body must have %u fields", s_names[type], s_field_count[type]);
        return NULL;
    }

    msg_t *msg = msg_new((msg_type_t)type);
    msg->flags = (uint32_t)flags;
    msg->corr = corr;
    if (e[3].via.str.size) /* an empty str may have a NULL ptr */
        memcpy(msg->sender, e[3].via.str.ptr, e[3].via.str.size);

    const msgpack_object *o = e[4].via.array.ptr;
    const char *bad = NULL;
    switch (msg->type) {
#define MSG(TYPE, name, fields)                                                                    \
    case MSG_##TYPE:                                                                               \
        bad = s_unpack_##name(o, &msg->name);                                                      \
        break;
#include "messages/messages.def"
#undef MSG
    default:
        break;
    }
    if (bad) {
        s_err(err, errlen, "%s.%s has the wrong type", s_names[type], bad);
        msg_destroy(&msg);
    }
    return msg;
}

/* A reused zone: msgpack-c's unpacker otherwise mallocs and frees an 8 KiB
 * zone for every message, a measurable part of a mailbox hop. */
struct msg_decoder {
    msgpack_zone zone;
};

msg_decoder_t *msg_decoder_new(void)
{
    msg_decoder_t *d = s_xmalloc(sizeof *d);
    if (!msgpack_zone_init(&d->zone, 2048))
        abort();
    return d;
}

void msg_decoder_destroy(msg_decoder_t **dp)
{
    if (!*dp)
        return;
    msgpack_zone_destroy(&(*dp)->zone);
    free(*dp);
    *dp = NULL;
}

msg_t *msg_decode_with(msg_decoder_t *d, const void *data, size_t size, char *err, size_t errlen)
{
    if (size == 0) {
        s_err(err, errlen, "empty message");
        return NULL;
    }
    if (size > MSG_MAX_BYTES) {
        s_err(err, errlen, "message of %zu bytes exceeds the %u-byte limit", size, MSG_MAX_BYTES);
        return NULL;
    }
    if (s_wellformed(data, size, err, errlen) < 0)
        return NULL;

    msgpack_object root;
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack(data, size, &off, &d->zone, &root);
    msg_t *msg = NULL;
    if (rc != MSGPACK_UNPACK_SUCCESS || off != size)
        s_err(err, errlen, "malformed msgpack (unpack returned %d)", (int)rc);
    else
        msg = s_from_object(&root, err, errlen);
    msgpack_zone_clear(&d->zone);
    return msg;
}

msg_t *msg_decode(const void *data, size_t size, char *err, size_t errlen)
{
    msg_decoder_t *d = msg_decoder_new();
    msg_t *msg = msg_decode_with(d, data, size, err, errlen);
    msg_decoder_destroy(&d);
    return msg;
}
