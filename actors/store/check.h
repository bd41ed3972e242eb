/*
 * check.h - the store's own check of a JOB_CREATE before it reaches
 * PostgreSQL. The HTTP actor has checked the request already; the store is
 * the last door, so it refuses again what cannot be stored or generated
 * (messages/limits.h), whoever sent it.
 */
#ifndef IMAGEJOBS_STORE_CHECK_H
#define IMAGEJOBS_STORE_CHECK_H

#include <stddef.h>

#include "messages/message.h"

/* 0 with the number of combinations in *ncombinations, or -1 with the
 * reason in why: a prompt of 1..JOB_PROMPT_MAX bytes, positive counts and
 * sizes, and a combinations array of 1..JOB_COMBINATIONS_MAX objects with
 * an integer seed >= 0 and, if present, a string (or null) style of at most
 * JOB_STYLE_MAX bytes; at most INT32_MAX images in all. */
int store_check_job(const msg_job_create_t *b, size_t *ncombinations, char *why, size_t len);

#endif
