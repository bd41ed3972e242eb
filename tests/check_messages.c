/*
 * check_messages.c - the message table's codec: every type round-trips, and
 * truncated, oversized, wrong-typed and random input is rejected, never a
 * crash.
 */
#include "config.h"

#include "messages/message.h"
#include "tests/runner.h"

#include <check.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* Fills every field of msg from its position, so no two fields (and no two
 * types) carry the same value. */
static void s_fill(msg_t *msg, unsigned salt)
{
    unsigned k = salt;
#define FIELD_U64(f) body->f = 0xF000000000000000ull + ++k;
#define FIELD_I64(f) body->f = -(int64_t)(1000 + ++k);
#define FIELD_F64(f) body->f = 0.25 + ++k;
#define FIELD_BOOL(f) body->f = (++k & 1) != 0;
#define FIELD_ENUM(f, e) body->f = (e##_t)(++k % e##_COUNT_OF);
#define FIELD_STR(f)                                                                               \
    {                                                                                              \
        char s[64];                                                                                \
        snprintf(s, sizeof s, "%s-%u-ünï", #f, ++k);                                               \
        msg_set_str(&body->f, s);                                                                  \
    }
#define FIELD_BIN(f)                                                                               \
    {                                                                                              \
        uint8_t b[300];                                                                            \
        for (size_t i = 0; i < sizeof b; i++)                                                      \
            b[i] = (uint8_t)(i * 7 + ++k);                                                         \
        msg_set_bin(&body->f, b, sizeof b);                                                        \
    }
#define MSG(TYPE, name, fields)                                                                    \
    if (msg->type == MSG_##TYPE) {                                                                 \
        msg_##name##_t *body = &msg->name;                                                         \
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
    (void)k;
}

static void s_assert_equal(const msg_t *a, const msg_t *b)
{
    ck_assert_int_eq(a->type, b->type);
    ck_assert_uint_eq(a->flags, b->flags);
    ck_assert_uint_eq(a->corr, b->corr);
    ck_assert_str_eq(a->sender, b->sender);
#define FIELD_U64(f) ck_assert_uint_eq(x->f, y->f);
#define FIELD_I64(f) ck_assert_int_eq(x->f, y->f);
#define FIELD_F64(f) ck_assert_double_eq(x->f, y->f);
#define FIELD_BOOL(f) ck_assert_int_eq(x->f, y->f);
#define FIELD_ENUM(f, e) ck_assert_int_eq(x->f, y->f);
#define FIELD_STR(f) ck_assert_pstr_eq(x->f, y->f);
#define FIELD_BIN(f)                                                                               \
    ck_assert_uint_eq(x->f.size, y->f.size);                                                       \
    ck_assert_mem_eq(x->f.data, y->f.data, x->f.size);
#define MSG(TYPE, name, fields)                                                                    \
    if (a->type == MSG_##TYPE) {                                                                   \
        const msg_##name##_t *x = &a->name, *y = &b->name;                                         \
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
}

static msg_t *s_sample(msg_type_t type)
{
    msg_t *msg = msg_new(type);
    msg->flags = MSG_FLAG_REPLY;
    msg->corr = 0xDEADBEEFCAFEull + type;
    strcpy(msg->sender, "generator-12");
    s_fill(msg, type * 100);
    return msg;
}

static msg_t *s_decode(const void *data, size_t size)
{
    char err[160] = "";
    msg_t *msg = msg_decode(data, size, err, sizeof err);
    if (!msg)
        ck_assert_msg(err[0], "a rejection must say why");
    return msg;
}

START_TEST(test_round_trip_every_type)
{
    ck_assert_int_gt(MSG_TYPE_COUNT, 0);
    for (unsigned t = 0; t < MSG_TYPE_COUNT; t++) {
        msg_t *in = s_sample((msg_type_t)t);
        void *data;
        size_t size;
        ck_assert_int_eq(msg_encode(in, &data, &size), 0);
        msg_t *out = s_decode(data, size);
        ck_assert_msg(out != NULL, "type %s did not round-trip", msg_type_name(t));
        s_assert_equal(in, out);
        ck_assert_str_ne(msg_type_name(t), "unknown");
        free(data);
        msg_destroy(&in);
        msg_destroy(&out);
        ck_assert_ptr_null(out);
    }
}
END_TEST

START_TEST(test_null_string_and_empty_bin_round_trip)
{
    msg_t *in = msg_new(MSG_IMAGE_READY);
    void *data;
    size_t size;
    ck_assert_int_eq(msg_encode(in, &data, &size), 0);
    msg_t *out = s_decode(data, size);
    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_null(out->image_ready.job_id);
    ck_assert_uint_eq(out->image_ready.png.size, 0);
    free(data);
    msg_destroy(&in);
    msg_destroy(&out);
}
END_TEST

START_TEST(test_every_truncation_rejected)
{
    for (unsigned t = 0; t < MSG_TYPE_COUNT; t++) {
        msg_t *in = s_sample((msg_type_t)t);
        void *data;
        size_t size;
        ck_assert_int_eq(msg_encode(in, &data, &size), 0);
        for (size_t cut = 0; cut < size; cut++) {
            msg_t *out = s_decode(data, cut);
            ck_assert_msg(out == NULL, "%s cut at %zu of %zu accepted", msg_type_name(t), cut,
                          size);
        }
        /* and a byte too many */
        uint8_t *longer = malloc(size + 1);
        memcpy(longer, data, size);
        longer[size] = 0xc0;
        ck_assert_ptr_null(s_decode(longer, size + 1));
        free(longer);
        free(data);
        msg_destroy(&in);
    }
}
END_TEST

START_TEST(test_oversized_rejected)
{
    size_t size = MSG_MAX_BYTES + 1;
    uint8_t *big = calloc(1, size);
    big[0] = 0x95; /* plausible start: fixarray of 5 */
    ck_assert_ptr_null(s_decode(big, size));
    free(big);
}
END_TEST

/* Headers that declare far more than the buffer holds: msgpack-c alone
 * would try to allocate for them. */
START_TEST(test_lying_counts_rejected)
{
    static const uint8_t cases[][8] = {
        {0xdd, 0xff, 0xff, 0xff, 0xff},       /* array32 of 4G elements */
        {0xdf, 0xff, 0xff, 0xff, 0xff},       /* map32 of 4G pairs */
        {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'},  /* str32 of 4 GiB */
        {0xc6, 0x7f, 0xff, 0xff, 0xff, 1, 2}, /* bin32 */
        {0x95, 0xdc, 0xff, 0xff, 0, 0, 0, 0}, /* nested array16 */
        {0xc1},                               /* never-used byte */
        {0xc9, 0xff, 0xff, 0xff, 0xff, 1},    /* ext32 */
    };
    static const size_t lens[] = {5, 5, 6, 7, 8, 1, 6};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
        ck_assert_msg(s_decode(cases[i], lens[i]) == NULL, "case %zu accepted", i);
}
END_TEST

/* Packs an envelope by hand with msgpack-c to build wrong shapes. */
typedef void (*shape_fn)(msgpack_packer *pk);

static msg_t *s_decode_shape(shape_fn fn)
{
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    fn(&pk);
    msg_t *msg = s_decode(sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy(&sbuf);
    return msg;
}

static void s_head(msgpack_packer *pk, unsigned type)
{
    msgpack_pack_array(pk, 5);
    msgpack_pack_uint32(pk, type);
    msgpack_pack_uint32(pk, 0);
    msgpack_pack_uint64(pk, 1);
    msgpack_pack_str_with_body(pk, "t", 1);
}

static void s_ok_ping(msgpack_packer *pk)
{
    s_head(pk, MSG_PING);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, 7);
    msgpack_pack_int64(pk, -3);
}
static void s_ping_seq_is_string(msgpack_packer *pk)
{
    s_head(pk, MSG_PING);
    msgpack_pack_array(pk, 2);
    msgpack_pack_str_with_body(pk, "7", 1);
    msgpack_pack_int64(pk, 1);
}
static void s_ping_negative_u64(msgpack_packer *pk)
{
    s_head(pk, MSG_PING);
    msgpack_pack_array(pk, 2);
    msgpack_pack_int64(pk, -7);
    msgpack_pack_int64(pk, 1);
}
static void s_ping_three_fields(msgpack_packer *pk)
{
    s_head(pk, MSG_PING);
    msgpack_pack_array(pk, 3);
    msgpack_pack_uint64(pk, 7);
    msgpack_pack_int64(pk, 1);
    msgpack_pack_int64(pk, 1);
}
static void s_unknown_type(msgpack_packer *pk)
{
    s_head(pk, MSG_TYPE_COUNT);
    msgpack_pack_array(pk, 0);
}
static void s_envelope_of_four(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_uint32(pk, MSG_PING);
    msgpack_pack_uint32(pk, 0);
    msgpack_pack_uint64(pk, 1);
    msgpack_pack_str_with_body(pk, "t", 1);
}
static void s_envelope_is_map(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 1);
    msgpack_pack_uint32(pk, 0);
    msgpack_pack_uint32(pk, 0);
}
static void s_unknown_flags(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 5);
    msgpack_pack_uint32(pk, MSG_PING);
    msgpack_pack_uint32(pk, 0x80);
    msgpack_pack_uint64(pk, 1);
    msgpack_pack_str_with_body(pk, "t", 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, 7);
    msgpack_pack_int64(pk, 1);
}
static void s_sender_too_long(msgpack_packer *pk)
{
    char name[MSG_NAME_MAX + 8];
    memset(name, 'x', sizeof name);
    msgpack_pack_array(pk, 5);
    msgpack_pack_uint32(pk, MSG_PING);
    msgpack_pack_uint32(pk, 0);
    msgpack_pack_uint64(pk, 1);
    msgpack_pack_str_with_body(pk, name, sizeof name);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, 7);
    msgpack_pack_int64(pk, 1);
}
static void s_string_with_nul(msgpack_packer *pk)
{
    s_head(pk, MSG_WORK_AVAILABLE);
    msgpack_pack_array(pk, 2);
    msgpack_pack_str_with_body(pk, "ab\0cd", 5);
    msgpack_pack_str_with_body(pk, "host", 4);
}
static void s_bin_given_str(msgpack_packer *pk)
{
    s_head(pk, MSG_IMAGE_READY);
    msgpack_pack_array(pk, 6);
    msgpack_pack_str_with_body(pk, "j", 1);
    for (int i = 0; i < 4; i++)
        msgpack_pack_uint64(pk, 1);
    msgpack_pack_str_with_body(pk, "png", 3);
}
/* LEASE_STATE's one field is a cancel_mode: three shapes of wrong value */
static void s_enum_out_of_range(msgpack_packer *pk)
{
    s_head(pk, MSG_LEASE_STATE);
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint64(pk, CANCEL_MODE_COUNT);
}
static void s_enum_negative(msgpack_packer *pk)
{
    s_head(pk, MSG_LEASE_STATE);
    msgpack_pack_array(pk, 1);
    msgpack_pack_int64(pk, -1);
}
static void s_enum_given_str(msgpack_packer *pk)
{
    s_head(pk, MSG_LEASE_STATE);
    msgpack_pack_array(pk, 1);
    msgpack_pack_str_with_body(pk, "immediate", 9);
}
static void s_enum_huge(msgpack_packer *pk)
{
    s_head(pk, MSG_LEASE_STATE);
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint64(pk, 0x100000001ull); /* would wrap to 1 as 32 bits */
}
static void s_enum_in_range(msgpack_packer *pk)
{
    s_head(pk, MSG_LEASE_STATE);
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint64(pk, CANCEL_MODE_AFTER_CURRENT_IMAGE);
}

START_TEST(test_wrong_types_rejected)
{
    msg_t *ok = s_decode_shape(s_ok_ping);
    ck_assert_ptr_nonnull(ok); /* the hand-built baseline is well-formed */
    ck_assert_uint_eq(ok->ping.seq, 7);
    ck_assert_int_eq(ok->ping.sent_ns, -3);
    msg_destroy(&ok);

    static const shape_fn bad[] = {
        s_ping_seq_is_string, s_ping_negative_u64, s_ping_three_fields, s_unknown_type,
        s_envelope_of_four,   s_envelope_is_map,   s_unknown_flags,     s_sender_too_long,
        s_string_with_nul,    s_bin_given_str,     s_enum_out_of_range, s_enum_negative,
        s_enum_given_str,     s_enum_huge,
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(s_decode_shape(bad[i]) == NULL, "bad shape %zu accepted", i);
}
END_TEST

START_TEST(test_enum_in_range_decodes)
{
    msg_t *m = s_decode_shape(s_enum_in_range);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(m->lease_state.cancel_mode, CANCEL_MODE_AFTER_CURRENT_IMAGE);
    msg_destroy(&m);
}
END_TEST

/* Every value of every enumeration is named and parsed back; nothing else
 * parses (a prefix, another case, trailing bytes). */
START_TEST(test_enum_names_round_trip)
{
    for (unsigned v = 0; v < CANCEL_MODE_COUNT; v++) {
        const char *n = cancel_mode_name((cancel_mode_t)v);
        cancel_mode_t back;
        ck_assert_int_eq(cancel_mode_parse(n, strlen(n), &back), 0);
        ck_assert_int_eq(back, v);
    }
    for (unsigned v = 0; v < JOB_STATUS_COUNT; v++) {
        const char *n = job_status_name((job_status_t)v);
        job_status_t back;
        ck_assert_int_eq(job_status_parse(n, strlen(n), &back), 0);
        ck_assert_int_eq(back, v);
    }
    for (unsigned v = 0; v < TASK_OUTCOME_COUNT; v++) {
        const char *n = task_outcome_name((task_outcome_t)v);
        task_outcome_t back;
        ck_assert_int_eq(task_outcome_parse(n, strlen(n), &back), 0);
        ck_assert_int_eq(back, v);
    }
    ck_assert_str_eq(cancel_mode_name(CANCEL_MODE_AFTER_CURRENT_IMAGE), "after_current_image");
    ck_assert_str_eq(job_status_name(JOB_STATUS_USER_CANCELLED), "user_cancelled");
    ck_assert_str_eq(task_outcome_name(TASK_OUTCOME_RELEASED), "released");
    ck_assert_str_eq(job_status_name(JOB_STATUS_COUNT), "unknown");
    ck_assert_str_eq(cancel_mode_name((cancel_mode_t)-1), "unknown");
    job_status_t st;
    ck_assert_int_eq(job_status_parse("complete", 8, &st), -1);
    ck_assert_int_eq(job_status_parse("Completed", 9, &st), -1);
    ck_assert_int_eq(job_status_parse("completed!", 10, &st), -1);
    ck_assert_int_eq(job_status_parse("", 0, &st), -1);
    ck_assert_int_eq(job_status_parse("completed", 9, &st), 0);
    ck_assert_int_eq(st, JOB_STATUS_COMPLETED);
}
END_TEST

/* xorshift64*: a fixed seed so a failure reproduces */
static uint64_t s_rand(uint64_t *state)
{
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return *state * 2685821657736338717ull;
}

START_TEST(test_random_buffers_never_crash)
{
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    uint8_t buf[512];
    int accepted = 0;
    for (int i = 0; i < 5000; i++) {
        size_t len = 1 + s_rand(&rng) % sizeof buf;
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)s_rand(&rng);
        msg_t *msg = s_decode(buf, len);
        if (msg)
            accepted++;
        msg_destroy(&msg);
    }
    /* pure noise almost never is an exact envelope of a known type */
    ck_assert_int_lt(accepted, 5);
}
END_TEST

START_TEST(test_mutated_messages_never_crash)
{
    uint64_t rng = 42;
    int rejected = 0;
    for (int i = 0; i < 4000; i++) {
        msg_t *in = s_sample((msg_type_t)(i % MSG_TYPE_COUNT));
        void *data;
        size_t size;
        ck_assert_int_eq(msg_encode(in, &data, &size), 0);
        uint8_t *bytes = data;
        int flips = 1 + (int)(s_rand(&rng) % 4);
        for (int f = 0; f < flips; f++)
            bytes[s_rand(&rng) % size] = (uint8_t)s_rand(&rng);
        msg_t *out = s_decode(data, size);
        if (!out)
            rejected++;
        msg_destroy(&out); /* whatever was accepted must free cleanly */
        free(data);
        msg_destroy(&in);
    }
    ck_assert_int_gt(rejected, 0);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("messages");
    TCase *tc = tcase_create("codec");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_round_trip_every_type);
    tcase_add_test(tc, test_null_string_and_empty_bin_round_trip);
    tcase_add_test(tc, test_every_truncation_rejected);
    tcase_add_test(tc, test_oversized_rejected);
    tcase_add_test(tc, test_lying_counts_rejected);
    tcase_add_test(tc, test_wrong_types_rejected);
    tcase_add_test(tc, test_enum_in_range_decodes);
    tcase_add_test(tc, test_enum_names_round_trip);
    tcase_add_test(tc, test_random_buffers_never_crash);
    tcase_add_test(tc, test_mutated_messages_never_crash);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
