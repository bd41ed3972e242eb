/*
 * instances.h - real `imagejobs serve` processes for the end-to-end tests:
 * a PostgreSQL database of the test's own (and a second one, for "another
 * deployment" on the same Redis), instances on it with the suite's Redis
 * (IMAGEJOBS_TEST_REDIS), each logging to tests/<prefix>.<name>.log, and
 * jobs created through them. Everything a test started is ended by
 * inst_cleanup(), also at exit. Failures are Check assertions.
 */
#ifndef IMAGEJOBS_TESTS_INSTANCES_H
#define IMAGEJOBS_TESTS_INSTANCES_H

#include <sys/types.h>

#define INST_MAX 3

typedef struct {
    char name[32];
    int port;
    pid_t pid; /* 0 once stopped */
    const char *extra[8];
    char generators[8];
    const char *conninfo; /* NULL: the test's database */
} inst_t;

extern inst_t inst_all[INST_MAX];
extern int inst_n;
extern char inst_conninfo[1024];       /* the test's database */
extern char inst_other_conninfo[1024]; /* the second one, once made */

/* A fresh database "<prefix>_<pid>" for this test; prefix also names the
 * instances' logs. */
void inst_database(const char *prefix);

/* A second fresh database, "<prefix>_other_<pid>". */
void inst_other_database(void);

/* Starts an instance named name-<pid> with that many generators and extra
 * options (NULL-terminated), and waits until it is ready. */
inst_t *inst_start(const char *name, const char *generators, ...);

/* Starts in (filled in by the caller, or again after a stop) and waits. */
void inst_launch(inst_t *in);

/* SIGTERM (must exit 0), then the same instance again on the same port. */
void inst_restart(inst_t *in);

/* A job of `combos` combinations (seeds 1..combos); its id (caller frees). */
char *inst_create(inst_t *in, int combos, int size, int steps, int images);

/* POST /api/jobs with body (JSON), which must answer 201; the job's id
 * (caller frees). */
char *inst_post_job(inst_t *in, const char *body);

/* Kills every instance left and drops the databases. */
void inst_cleanup(void);

#endif
