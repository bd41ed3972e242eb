/*
 * js_client.h - runs tests/js/sse-watch.mjs, a real WHATWG EventSource (npm
 * `eventsource`), from the Check tests, so that the server's streams are
 * also read by the client a browser would be. cmd/imagejobs-local test
 * installs it and exports IMAGEJOBS_JS_DIR (sse-watch.mjs beside its
 * node_modules/); without that variable the JS tests skip.
 */
#ifndef IMAGEJOBS_TESTS_JS_CLIENT_H
#define IMAGEJOBS_TESTS_JS_CLIENT_H

#include <stdbool.h>

/* Whether $IMAGEJOBS_JS_DIR holds sse-watch.mjs and node_modules/eventsource
 * (node itself is looked up in PATH, or is $IMAGEJOBS_NODE). */
bool js_available(void);

/* Runs `node $IMAGEJOBS_JS_DIR/sse-watch.mjs url [--last-event-id ID]
 * [--until EVENT] --timeout-ms timeout_ms` (last_event_id and until may be
 * NULL: none, and "end"), its stderr to ours, and waits for it up to
 * timeout_ms plus 10 s for node to start and stop; past that it is killed.
 * *out_stdout (when not NULL) receives what it printed, one JSON line per
 * event, NUL-terminated, malloc'd: the caller frees it. Returns the exit
 * status (0: the until event came; 1: timeout or error), or -1 when it
 * could not be run, was killed, or died of a signal. */
int js_sse_watch(const char *url, const char *last_event_id, const char *until, int timeout_ms,
                 char **out_stdout);

#endif
