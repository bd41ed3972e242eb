/*
 * check_pool.c - actors/generator/pool: tiles run round-robin across the
 * clients (counted, not timed), an abort takes the queued tiles off at once
 * and returns while a tile of the same client still runs, done comes once
 * per batch, leave and destroy wait for what runs, many clients at once.
 *
 * Tiles that must hold still block on a semaphore the test posts: no
 * sleeps, no timing.
 */
#include "config.h"

#include "actors/generator/pool.h"

#include "tests/runner.h"

#include <check.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>

#define ORDER_MAX 256

/* What every tile of a test writes to: the order in which clients' tiles
 * ran (meaningful with one pool thread). */
typedef struct {
    pthread_mutex_t mu;
    int order[ORDER_MAX];
    int n;
} log_t;

typedef struct {
    gen_pool_batch_t b; /* first: the pool hands it back */
    int id;
    log_t *log;
    sem_t *started; /* tile 0 posts it, when set */
    sem_t *release; /* then waits for it, when set */
    atomic_int ran[64];
    atomic_int tiles_run;
    atomic_int done_calls;
    atomic_bool completed;
} batch_t;

static void s_run(gen_pool_batch_t *gb, uint32_t tile)
{
    batch_t *bt = (batch_t *)gb;
    if (tile == 0 && bt->started)
        sem_post(bt->started);
    if (tile == 0 && bt->release)
        sem_wait(bt->release);
    if (tile < 64)
        atomic_fetch_add(&bt->ran[tile], 1);
    atomic_fetch_add(&bt->tiles_run, 1);
    if (bt->log) {
        pthread_mutex_lock(&bt->log->mu);
        if (bt->log->n < ORDER_MAX)
            bt->log->order[bt->log->n++] = bt->id;
        pthread_mutex_unlock(&bt->log->mu);
    }
}

static void s_done(gen_pool_batch_t *gb, bool completed)
{
    batch_t *bt = (batch_t *)gb;
    atomic_store(&bt->completed, completed);
    atomic_fetch_add(&bt->done_calls, 1);
}

static batch_t *s_batch(int id, uint32_t ntiles, log_t *log)
{
    batch_t *bt = calloc(1, sizeof *bt);
    ck_assert_ptr_nonnull(bt);
    bt->b.ntiles = ntiles;
    bt->b.run = s_run;
    bt->b.done = s_done;
    bt->id = id;
    bt->log = log;
    return bt;
}

static gen_pool_t *s_pool(unsigned threads)
{
    char err[200];
    gen_pool_t *p = gen_pool_new(threads, 0, err, sizeof err);
    ck_assert_msg(p != NULL, "gen_pool_new: %s", err);
    ck_assert_uint_eq(gen_pool_threads(p), threads);
    return p;
}

/* A client whose one tile holds the pool's only thread until released:
 * what is submitted meanwhile is all queued when the thread gets free. */
typedef struct {
    gen_pool_client_t *c;
    batch_t *bt;
    sem_t started, release;
} gate_t;

static void s_gate_close(gen_pool_t *p, gate_t *g)
{
    sem_init(&g->started, 0, 0);
    sem_init(&g->release, 0, 0);
    g->c = gen_pool_join(p);
    g->bt = s_batch(-1, 1, NULL);
    g->bt->started = &g->started;
    g->bt->release = &g->release;
    ck_assert_int_eq(gen_pool_submit(g->c, &g->bt->b), 0);
    sem_wait(&g->started); /* the thread is in the gate's tile */
}

static void s_gate_open(gate_t *g)
{
    sem_post(&g->release);
    gen_pool_leave(&g->c);
    ck_assert_int_eq(atomic_load(&g->bt->done_calls), 1);
    free(g->bt);
    sem_destroy(&g->started);
    sem_destroy(&g->release);
}

/* Three clients queue 10, 10 and 4 tiles at once: the one thread takes
 * them in turns, so at every point of the run the counts of the clients
 * still queued differ by at most one. */
START_TEST(test_round_robin)
{
    gen_pool_t *p = s_pool(1);
    log_t log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    gate_t gate;
    s_gate_close(p, &gate);
    const uint32_t want[3] = {10, 10, 4};
    gen_pool_client_t *c[3];
    batch_t *bt[3];
    for (int i = 0; i < 3; i++) {
        c[i] = gen_pool_join(p);
        bt[i] = s_batch(i, want[i], &log);
        ck_assert_int_eq(gen_pool_submit(c[i], &bt[i]->b), 0);
        ck_assert_int_eq(gen_pool_submit(c[i], &bt[i]->b), -1); /* one batch at a time */
    }
    ck_assert_uint_eq(gen_pool_queued(p), 24);
    s_gate_open(&gate);
    for (int i = 0; i < 3; i++)
        gen_pool_wait(c[i]);
    ck_assert_int_eq(log.n, 24);
    uint32_t seen[3] = {0, 0, 0};
    for (int k = 0; k < log.n; k++) {
        seen[log.order[k]]++;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                /* a client that still has tiles is never two behind another */
                if (seen[i] < want[i])
                    ck_assert_msg(seen[j] <= seen[i] + 1,
                                  "after %d tiles: client %d ran %u, client %d ran %u", k + 1, j,
                                  seen[j], i, seen[i]);
            }
    }
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(seen[i], want[i]);
        ck_assert_uint_eq(gen_pool_client_tiles(c[i]), want[i]);
        ck_assert_int_eq(atomic_load(&bt[i]->done_calls), 1);
        ck_assert(atomic_load(&bt[i]->completed));
        gen_pool_leave(&c[i]);
        ck_assert_ptr_null(c[i]);
        free(bt[i]);
    }
    ck_assert_uint_eq(gen_pool_queued(p), 0);
    gen_pool_destroy(&p);
    ck_assert_ptr_null(p);
}
END_TEST

/* A client's tile 0 runs (and holds); abort takes its four queued tiles
 * off and returns meanwhile, without calling done; the client may submit
 * its next batch at once. When tile 0 ends, the aborted batch's done comes
 * (not completed), and the next batch runs whole. */
START_TEST(test_abort_while_a_tile_runs)
{
    gen_pool_t *p = s_pool(1);
    sem_t started, release;
    sem_init(&started, 0, 0);
    sem_init(&release, 0, 0);
    gen_pool_client_t *c = gen_pool_join(p);
    batch_t *first = s_batch(0, 5, NULL);
    first->started = &started;
    first->release = &release;
    ck_assert_int_eq(gen_pool_submit(c, &first->b), 0);
    sem_wait(&started);
    ck_assert_uint_eq(gen_pool_queued(p), 4);

    gen_pool_abort(c); /* returns although tile 0 is still held */
    ck_assert_uint_eq(gen_pool_queued(p), 0);
    ck_assert_int_eq(atomic_load(&first->done_calls), 0);
    ck_assert_int_eq(atomic_load(&first->tiles_run), 0);

    batch_t *next = s_batch(1, 3, NULL);
    ck_assert_int_eq(gen_pool_submit(c, &next->b), 0);
    ck_assert_uint_eq(gen_pool_queued(p), 3);
    sem_post(&release);
    gen_pool_wait(c);

    ck_assert_int_eq(atomic_load(&first->done_calls), 1);
    ck_assert(!atomic_load(&first->completed));
    ck_assert_int_eq(atomic_load(&first->tiles_run), 1);
    ck_assert_int_eq(atomic_load(&first->ran[0]), 1);
    for (int t = 1; t < 5; t++)
        ck_assert_int_eq(atomic_load(&first->ran[t]), 0);
    ck_assert_int_eq(atomic_load(&next->done_calls), 1);
    ck_assert(atomic_load(&next->completed));
    ck_assert_int_eq(atomic_load(&next->tiles_run), 3);
    ck_assert_uint_eq(gen_pool_client_tiles(c), 4);
    gen_pool_leave(&c);
    gen_pool_destroy(&p);
    free(first);
    free(next);
    sem_destroy(&started);
    sem_destroy(&release);
}
END_TEST

/* An abort of a batch none of whose tiles started calls done inside the
 * abort itself (nothing else would); aborting again, or with nothing
 * queued, does nothing. */
START_TEST(test_abort_before_any_tile)
{
    gen_pool_t *p = s_pool(1);
    gate_t gate;
    s_gate_close(p, &gate);
    gen_pool_client_t *c = gen_pool_join(p);
    batch_t *bt = s_batch(0, 8, NULL);
    ck_assert_int_eq(gen_pool_submit(c, &bt->b), 0);
    gen_pool_abort(c);
    ck_assert_int_eq(atomic_load(&bt->done_calls), 1);
    ck_assert(!atomic_load(&bt->completed));
    gen_pool_abort(c);
    ck_assert_int_eq(atomic_load(&bt->done_calls), 1);
    s_gate_open(&gate);
    gen_pool_wait(c);
    ck_assert_int_eq(atomic_load(&bt->tiles_run), 0);
    ck_assert_uint_eq(gen_pool_client_tiles(c), 0);
    gen_pool_leave(&c);
    gen_pool_destroy(&p);
    free(bt);
}
END_TEST

/* Leave with tiles queued behind another client's: they are dropped, done
 * comes, and leave returns without running them. */
START_TEST(test_leave_drops_queued)
{
    gen_pool_t *p = s_pool(1);
    gate_t gate;
    s_gate_close(p, &gate);
    gen_pool_client_t *c = gen_pool_join(p);
    batch_t *bt = s_batch(0, 6, NULL);
    ck_assert_int_eq(gen_pool_submit(c, &bt->b), 0);
    gen_pool_leave(&c);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(atomic_load(&bt->done_calls), 1);
    ck_assert_int_eq(atomic_load(&bt->tiles_run), 0);
    ck_assert_uint_eq(gen_pool_queued(p), 0);
    s_gate_open(&gate);
    gen_pool_destroy(&p);
    free(bt);
}
END_TEST

/* Sixteen clients on four threads, five batches each: every tile runs
 * exactly once, every batch completes once, and each client's count is
 * its own tiles. */
START_TEST(test_many_clients)
{
    enum { CLIENTS = 16, ROUNDS = 5, TILES = 50 };
    gen_pool_t *p = s_pool(4);
    gen_pool_client_t *c[CLIENTS];
    batch_t *bt[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        ck_assert_ptr_nonnull(c[i] = gen_pool_join(p));
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < CLIENTS; i++) {
            bt[i] = s_batch(i, TILES, NULL);
            ck_assert_int_eq(gen_pool_submit(c[i], &bt[i]->b), 0);
        }
        for (int i = 0; i < CLIENTS; i++) {
            gen_pool_wait(c[i]);
            ck_assert_int_eq(atomic_load(&bt[i]->done_calls), 1);
            ck_assert(atomic_load(&bt[i]->completed));
            for (int t = 0; t < TILES; t++)
                ck_assert_int_eq(atomic_load(&bt[i]->ran[t]), 1);
            free(bt[i]);
        }
    }
    for (int i = 0; i < CLIENTS; i++) {
        ck_assert_uint_eq(gen_pool_client_tiles(c[i]), ROUNDS * TILES);
        gen_pool_leave(&c[i]);
    }
    gen_pool_destroy(&p);
}
END_TEST

/* A pool of no threads (inline) takes no batch; destroy of a NULL pool
 * and leave of a NULL client do nothing. */
START_TEST(test_inline_pool)
{
    gen_pool_t *p = s_pool(0);
    gen_pool_client_t *c = gen_pool_join(p);
    batch_t *bt = s_batch(0, 2, NULL);
    ck_assert_int_eq(gen_pool_submit(c, &bt->b), -1);
    ck_assert_int_eq(atomic_load(&bt->done_calls), 0);
    gen_pool_leave(&c);
    gen_pool_leave(&c);
    gen_pool_destroy(&p);
    gen_pool_destroy(&p);
    free(bt);
}
END_TEST

static Suite *s_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_round_robin);
    tcase_add_test(tc, test_abort_while_a_tile_runs);
    tcase_add_test(tc, test_abort_before_any_tile);
    tcase_add_test(tc, test_leave_drops_queued);
    tcase_add_test(tc, test_many_clients);
    tcase_add_test(tc, test_inline_pool);
    suite_add_tcase(s, tc);
    return s;
}

const test_program_t test_program = {.suite = s_suite};
