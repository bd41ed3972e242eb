/*
 * input.h - the request bodies of the job API, checked (DESIGN.md "HTTP
 * API"): POST /api/jobs and the cancel's optional body. Private to the http
 * actor. Bad input gets a reason that names the field at fault, and builds
 * nothing.
 */
#ifndef IMAGEJOBS_HTTP_INPUT_H
#define IMAGEJOBS_HTTP_INPUT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "actors/http/server.h"
#include "messages/message.h"
#include "runtime/uuid.h"

/* Checks the body of POST /api/jobs (and its Content-Type) and builds the
 * store's JOB_CREATE for it, under a fresh id written to job_id and with a
 * random seed for each combination that has none; *total_images is
 * combinations x images_per_combination. Returns the message (the
 * caller's), or NULL with the HTTP status (400, 415, 500) in *status and
 * the reason in why. */
msg_t *http_input_job(const http_request_t *rq, char job_id[UUID_STR_LEN], uint64_t *total_images,
                      int *status, char *why, size_t whylen);

/* The mode of a cancel from its optional body: none, blank, {} or
 * {"mode": ...} (immediate when absent). 0, or -1 with the reason in why
 * for anything else. */
int http_input_cancel_mode(const http_request_t *rq, cancel_mode_t *mode, char *why, size_t whylen);

/* Checks the body of POST /api/jobs/cancel (docs/api.md) and builds the
 * store's request (received_at_us, reason and cancelled_by left to the
 * caller); *ids gets the job ids asked for, in order, each once (NULL for
 * a filter). NULL with the reason in why (a 400). */
msg_t *http_input_cancel_many(const http_request_t *rq, json_t **ids, char *why, size_t whylen);

/* A duration as Replicate's Cancel-After header spells it: "90s", "5m",
 * "1h", "1h30m", or plain seconds; 1 s to JOB_DEADLINE_MAX_S. 0, or -1. */
int http_input_duration(const char *v, uint64_t *seconds);

/* Drops a UTF-8 sequence cut short at the end of s (by truncation). */
void http_utf8_trim(char *s);

#endif
