/*
 * message.h - the envelope every actor message travels in, and its codec.
 *
 * The message types and their bodies come from messages.def. On the wire a
 * message is one msgpack array [type, flags, corr, sender, [fields...]].
 * Decoding treats its input as hostile: anything that is not exactly a
 * message of a known type is rejected with a reason, never a crash.
 */
#ifndef IMAGEJOBS_MESSAGE_H
#define IMAGEJOBS_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest encoded message accepted (a 1024x1024 PNG fits many times). */
#define MSG_MAX_BYTES (64u * 1024 * 1024)
/* Longest actor name, including the terminating NUL. */
#define MSG_NAME_MAX 32

typedef struct {
    uint8_t *data;
    size_t size;
} msg_bin_t;

/* The enumerations of the table: cancel_mode_t, job_status_t, ... */
#define VALUE(CONSTANT, text) CONSTANT,
#define ENUM(PREFIX, name, values)                                                                 \
    typedef enum { values PREFIX##_COUNT } name##_t;                                               \
    enum { name##_COUNT_OF = PREFIX##_COUNT }; /* the count, by the name */
#include "messages/messages.def"
#undef ENUM
#undef VALUE

/* For each enumeration: name_name(v) is the value's text ("immediate"), or
 * "unknown" out of range; name_parse(s, len, &v) reads exactly that text
 * (len bytes, not NUL-terminated) and returns 0, or -1 for anything else. */
#define ENUM(PREFIX, name, values)                                                                 \
    const char *name##_name(name##_t v);                                                           \
    int name##_parse(const char *s, size_t len, name##_t *out);
#include "messages/messages.def"
#undef ENUM

/* One body struct per message type: msg_ping_t, msg_job_cancel_t, ... */
#define FIELD_U64(f) uint64_t f;
#define FIELD_I64(f) int64_t f;
#define FIELD_F64(f) double f;
#define FIELD_BOOL(f) bool f;
#define FIELD_STR(f) char *f;
#define FIELD_BIN(f) msg_bin_t f;
#define FIELD_ENUM(f, e) e##_t f;
#define MSG(TYPE, name, fields)                                                                    \
    typedef struct {                                                                               \
        fields                                                                                     \
    } msg_##name##_t;
#include "messages/messages.def"
#undef MSG
#undef FIELD_U64
#undef FIELD_I64
#undef FIELD_F64
#undef FIELD_BOOL
#undef FIELD_STR
#undef FIELD_BIN
#undef FIELD_ENUM

typedef enum {
#define MSG(TYPE, name, fields) MSG_##TYPE,
#include "messages/messages.def"
#undef MSG
    MSG_TYPE_COUNT
} msg_type_t;

enum {
    MSG_FLAG_REPLY = 1u << 0, /* answers the request with the same corr */
    MSG_FLAG_EVENT = 1u << 1, /* delivered by the bus, not addressed */
    MSG_FLAGS_KNOWN = MSG_FLAG_REPLY | MSG_FLAG_EVENT
};

typedef struct {
    msg_type_t type;
    uint32_t flags;
    uint64_t corr;             /* correlation id; 0 when none */
    char sender[MSG_NAME_MAX]; /* actor (mailbox) name of the sender */
    union {
#define MSG(TYPE, name, fields) msg_##name##_t name;
#include "messages/messages.def"
#undef MSG
    };
} msg_t;

/* A new zeroed message of the given type; the caller owns it. Never NULL
 * (aborts on out-of-memory, like the rest of the runtime). */
msg_t *msg_new(msg_type_t type);

/* Frees the message and every string and buffer it owns; NULLs *msgp. */
void msg_destroy(msg_t **msgp);

/* The wire name of a type ("ping", "job_cancel"), or "unknown". */
const char *msg_type_name(unsigned type);

/* Replaces a STR field with a copy of s (NULL allowed). */
void msg_set_str(char **field, const char *s);

/* Replaces a BIN field with a copy of size bytes at data. */
void msg_set_bin(msg_bin_t *field, const void *data, size_t size);

/* Encodes msg. On success *data is a malloc'd buffer the caller owns and
 * frees with free(); returns 0. Returns -1 if msg's type is unknown. */
int msg_encode(const msg_t *msg, void **data, size_t *size);

/* Decodes size bytes at data. Returns a new message the caller owns, or
 * NULL with a one-line reason written to err (errlen bytes). */
msg_t *msg_decode(const void *data, size_t size, char *err, size_t errlen);

/* The same with scratch memory kept between calls: for a receive loop.
 * A decoder belongs to one thread at a time. */
typedef struct msg_decoder msg_decoder_t;
msg_decoder_t *msg_decoder_new(void);
void msg_decoder_destroy(msg_decoder_t **dp);
msg_t *msg_decode_with(msg_decoder_t *d, const void *data, size_t size, char *err, size_t errlen);

#endif
