/*
 * fuzz_msg_decode.c - libFuzzer harness of the message codec
 * (messages/message.c): msg_decode() on raw bytes never crashes, and a
 * message that decodes encodes to bytes that decode to a message encoding
 * to the same bytes (encode -> decode -> encode is the identity).
 *
 * With IMAGEJOBS_FUZZ_DUMP=DIR it writes its seed corpus instead: one
 * message of every type of messages.def, fields set (tests/fuzz/sample.h).
 */
#include "config.h"

#include "messages/message.h"
#include "tests/fuzz/sample.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static msg_decoder_t *s_decoder;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("IMAGEJOBS_FUZZ_DUMP");
    if (dir) {
        for (unsigned t = 0; t < MSG_TYPE_COUNT; t++) {
            char name[64];
            snprintf(name, sizeof name, "%02u-%s", t, msg_type_name(t));
            sample_dump(dir, name, -1, sample_message((msg_type_t)t));
        }
        exit(0);
    }
    s_decoder = msg_decoder_new();
    return 0;
}

static void s_encode(const msg_t *m, void **data, size_t *size)
{
    if (msg_encode(m, data, size) < 0) {
        fprintf(stderr, "a decoded %s does not encode\n", msg_type_name(m->type));
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[160];
    /* Both decoders: the plain one and the one a receive loop keeps. */
    msg_t *m = msg_decode(data, size, err, sizeof err);
    msg_t *again = msg_decode_with(s_decoder, data, size, err, sizeof err);
    if (!m != !again) {
        fprintf(stderr, "msg_decode and msg_decode_with disagree\n");
        abort();
    }
    msg_destroy(&again);
    if (!m)
        return 0;

    void *first, *second;
    size_t first_size, second_size;
    s_encode(m, &first, &first_size);
    msg_destroy(&m);
    m = msg_decode(first, first_size, err, sizeof err);
    if (!m) {
        fprintf(stderr, "an encoded message does not decode: %s\n", err);
        abort();
    }
    s_encode(m, &second, &second_size);
    msg_destroy(&m);
    if (first_size != second_size || memcmp(first, second, first_size) != 0) {
        fprintf(stderr, "encode -> decode -> encode changed the bytes (%zu, then %zu)\n",
                first_size, second_size);
        abort();
    }
    free(first);
    free(second);
    return 0;
}
