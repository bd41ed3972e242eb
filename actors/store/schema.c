/*
 * schema.c - store_migrate(): the PostgreSQL schema, created or upgraded
 * step by step and recorded in schema_version.
 *
 * Key constraint: this is the one place that talks to PostgreSQL
 * synchronously (PQconnectdbParams, PQexec), for `imagejobs migrate` and
 * serve's start-up, never inside an actor loop; and every wait in it is
 * bounded (connect_timeout, lock_timeout), so that serve, which retries it
 * while it also waits for SIGTERM, always gets back to its signal check.
 */
#include "config.h"

#include "actors/store.h"
#include "actors/store/pgpipe.h"

#include "runtime/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds of one attempt; a caller that wants to wait longer retries. */
#define MIGRATE_CONNECT_TIMEOUT "3" /* seconds, libpq's connect_timeout */
#define MIGRATE_LOCK_TIMEOUT "2s"   /* for the advisory lock and the DDL's locks */

/* Each step runs once, in order, inside store_migrate()'s transaction; step
 * N brings the schema to version N. Append steps, never edit one. */
static const char *const s_migrations[STORE_SCHEMA_VERSION] = {
    /* 1: jobs, their combinations, their images */
    "CREATE TABLE jobs ("
    "  id uuid PRIMARY KEY,"
    "  status text NOT NULL DEFAULT 'pending' CHECK (status IN"
    "    ('pending', 'processing', 'completed', 'failed', 'user_cancelled')),"
    "  prompt text NOT NULL,"
    "  params jsonb NOT NULL,"
    "  total_images integer NOT NULL CHECK (total_images > 0),"
    "  completed_images integer NOT NULL DEFAULT 0 CHECK (completed_images >= 0),"
    "  generated_attach_ids uuid[] NOT NULL DEFAULT '{}',"
    "  cancel_requested_at timestamptz,"
    "  cancel_mode text CHECK (cancel_mode IN ('immediate', 'after_current_image')),"
    "  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    "  started_at timestamptz,"
    "  finished_at timestamptz,"
    "  error text);"
    "CREATE TABLE job_tasks ("
    "  job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  combination integer NOT NULL CHECK (combination >= 0),"
    "  seed bigint NOT NULL,"
    "  style text NOT NULL DEFAULT '',"
    "  status text NOT NULL DEFAULT 'pending' CHECK (status IN"
    "    ('pending', 'processing', 'completed', 'failed', 'cancelled')),"
    "  completed_images integer NOT NULL DEFAULT 0 CHECK (completed_images >= 0),"
    "  claimed_by text,"
    "  lease_until timestamptz,"
    "  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    "  started_at timestamptz,"
    "  cancel_observed_at timestamptz,"
    "  stopped_at timestamptz,"
    "  error text,"
    "  PRIMARY KEY (job_id, combination));"
    /* the claim scans only unfinished tasks, oldest job first */
    "CREATE INDEX job_tasks_open ON job_tasks (created_at, job_id, combination)"
    "  WHERE status IN ('pending', 'processing');"
    "CREATE TABLE attachments ("
    "  id uuid PRIMARY KEY,"
    "  job_id uuid NOT NULL,"
    "  combination integer NOT NULL,"
    "  image_index integer NOT NULL CHECK (image_index >= 0),"
    "  content_type text NOT NULL,"
    "  bytes bytea NOT NULL,"
    "  width integer,"
    "  height integer,"
    "  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    "  UNIQUE (job_id, combination, image_index),"
    "  FOREIGN KEY (job_id, combination) REFERENCES job_tasks ON DELETE CASCADE);",

    /* 2: job events (docs/events.md). Triggers on jobs, job_tasks and
     * attachments stage an event row (seq NULL) for every change a user
     * can see, in the transaction that makes it; job_events_number(), the
     * last statement of each of the store's transactions, numbers them on
     * the one event clock. It locks the clock's row, so from there to the
     * commit no other transaction numbers: seqs are dense and follow commit
     * order (a reader that sees seq N sees every seq below it). The clock is
     * always the last lock a transaction takes, so it adds no deadlock. A
     * deferred trigger numbers at commit what a transaction left unnumbered
     * (SQL typed by hand). */
    "CREATE FUNCTION ij_iso(ts timestamptz) RETURNS text LANGUAGE sql STABLE AS"
    "  $$SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')$$;"
    /* log_id names this database's log: instances of another deployment
     * may share the Redis, and their seqs are not ours */
    "CREATE TABLE event_clock ("
    "  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),"
    "  seq bigint NOT NULL,"
    "  log_id uuid NOT NULL DEFAULT gen_random_uuid());"
    "INSERT INTO event_clock (only_row, seq) VALUES (true, 0);"
    "CREATE TABLE job_events ("
    "  n bigserial PRIMARY KEY,"
    "  seq bigint UNIQUE,"
    "  job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  kind text NOT NULL CHECK (kind IN"
    "    ('created', 'started', 'image', 'cancel', 'stopped', 'end')),"
    "  job_status text,"
    "  data jsonb NOT NULL,"
    "  staged_at timestamptz NOT NULL DEFAULT clock_timestamp());"
    "CREATE INDEX job_events_of_job ON job_events (job_id, seq);"
    "CREATE INDEX job_events_unnumbered ON job_events (n) WHERE seq IS NULL;"
    "CREATE FUNCTION job_event_stage(j uuid, k text, d jsonb) RETURNS void LANGUAGE sql AS"
    "  $$INSERT INTO job_events (job_id, kind, data) VALUES (j, k, d)$$;"
    "CREATE FUNCTION jobs_events() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  IF TG_OP = 'INSERT' THEN\n"
    "    PERFORM job_event_stage(NEW.id, 'created', jsonb_build_object('job_id', NEW.id,"
    "      'job_status', NEW.status, 'prompt', NEW.prompt, 'total_images', NEW.total_images,"
    "      'created_at', ij_iso(NEW.created_at)));\n"
    "    RETURN NULL;\n"
    "  END IF;\n"
    "  IF OLD.status = 'pending' AND NEW.status = 'processing' THEN\n"
    "    PERFORM job_event_stage(NEW.id, 'started', jsonb_build_object('job_id', NEW.id,"
    "      'started_at', ij_iso(NEW.started_at)));\n"
    "  END IF;\n"
    "  IF NEW.cancel_requested_at IS NOT NULL AND (OLD.cancel_requested_at IS NULL"
    "      OR OLD.cancel_mode IS DISTINCT FROM NEW.cancel_mode) THEN\n"
    "    PERFORM job_event_stage(NEW.id, 'cancel', jsonb_build_object('job_id', NEW.id,"
    "      'cancel_requested_at', ij_iso(NEW.cancel_requested_at), 'mode', NEW.cancel_mode,"
    "      'reason', 'user'));\n"
    "  END IF;\n"
    "  IF OLD.status IN ('pending', 'processing')"
    "      AND NEW.status NOT IN ('pending', 'processing') THEN\n"
    "    PERFORM job_event_stage(NEW.id, 'end', jsonb_build_object('job_id', NEW.id,"
    "      'job_status', NEW.status, 'completed_images', NEW.completed_images,"
    "      'total_images', NEW.total_images,"
    "      'generated_attach_ids', to_jsonb(NEW.generated_attach_ids),"
    "      'finished_at', ij_iso(NEW.finished_at), 'error', NEW.error));\n"
    "  END IF;\n"
    "  RETURN NULL;\n"
    "END$$;"
    "CREATE TRIGGER jobs_created AFTER INSERT ON jobs"
    "  FOR EACH ROW EXECUTE FUNCTION jobs_events();"
    "CREATE TRIGGER jobs_changed AFTER UPDATE ON jobs FOR EACH ROW"
    "  WHEN (OLD.status IS DISTINCT FROM NEW.status"
    "        OR OLD.cancel_mode IS DISTINCT FROM NEW.cancel_mode"
    "        OR OLD.cancel_requested_at IS DISTINCT FROM NEW.cancel_requested_at)"
    "  EXECUTE FUNCTION jobs_events();"
    /* an AFTER trigger runs once its whole statement is done: the job's
     * counters it reads already count this image */
    "CREATE FUNCTION attachments_events() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "DECLARE j record;\n"
    "BEGIN\n"
    "  SELECT completed_images, total_images INTO j FROM jobs WHERE id = NEW.job_id;\n"
    "  PERFORM job_event_stage(NEW.job_id, 'image', jsonb_build_object('job_id', NEW.job_id,"
    "    'combination', NEW.combination, 'image_index', NEW.image_index, 'attach_id', NEW.id,"
    "    'completed_images', j.completed_images, 'total_images', j.total_images));\n"
    "  RETURN NULL;\n"
    "END$$;"
    "CREATE TRIGGER attachments_recorded AFTER INSERT ON attachments"
    "  FOR EACH ROW EXECUTE FUNCTION attachments_events();"
    "CREATE FUNCTION job_tasks_events() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  PERFORM job_event_stage(NEW.job_id, 'stopped', jsonb_build_object('job_id', NEW.job_id,"
    "    'combination', NEW.combination, 'status', NEW.status,"
    "    'completed_images', NEW.completed_images,"
    "    'cancel_observed_at', ij_iso(NEW.cancel_observed_at),"
    "    'stopped_at', ij_iso(NEW.stopped_at), 'error', NEW.error));\n"
    "  RETURN NULL;\n"
    "END$$;"
    "CREATE TRIGGER job_tasks_ended AFTER UPDATE ON job_tasks FOR EACH ROW"
    "  WHEN (OLD.status IN ('pending', 'processing')"
    "        AND NEW.status IN ('completed', 'cancelled', 'failed'))"
    "  EXECUTE FUNCTION job_tasks_events();"
    /* within one transaction: created, started, images, cancel, stops, end */
    "CREATE FUNCTION job_events_number()"
    "  RETURNS TABLE (seq bigint, job_id uuid, kind text, job_status text, data text,"
    "                 log_id uuid)"
    "  LANGUAGE plpgsql AS $$\n"
    "#variable_conflict use_column\n"
    "DECLARE cnt bigint; base bigint; log uuid;\n"
    "BEGIN\n"
    "  SELECT count(*) INTO cnt FROM job_events e WHERE e.seq IS NULL;\n"
    "  IF cnt = 0 THEN RETURN; END IF;\n"
    "  UPDATE event_clock c SET seq = c.seq + cnt RETURNING c.seq - cnt, c.log_id"
    "    INTO base, log;\n"
    "  RETURN QUERY WITH o AS ("
    "      SELECT e.n, row_number() OVER (ORDER BY CASE e.kind WHEN 'created' THEN 0"
    "        WHEN 'started' THEN 1 WHEN 'image' THEN 2 WHEN 'cancel' THEN 3"
    "        WHEN 'stopped' THEN 4 ELSE 5 END, e.n) AS k"
    "      FROM job_events e WHERE e.seq IS NULL),"
    "    u AS ("
    "      UPDATE job_events e SET seq = base + o.k, job_status = j.status"
    "      FROM o, jobs j WHERE e.n = o.n AND j.id = e.job_id"
    "      RETURNING e.seq, e.job_id, e.kind, e.job_status, e.data::text, log)"
    "    SELECT * FROM u ORDER BY 1;\n"
    "END$$;"
    "CREATE FUNCTION job_events_number_late() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  PERFORM * FROM job_events_number();\n"
    "  RETURN NULL;\n"
    "END$$;"
    "CREATE CONSTRAINT TRIGGER job_events_numbered AFTER INSERT ON job_events"
    "  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION job_events_number_late();",

    /* 3: the queue (docs/api.md): priorities (on the tasks too, for the
     * claim's index), the cancel's audit, the list's order, and the
     * queue position and ETA of GET */
    "ALTER TABLE jobs"
    "  ADD COLUMN priority integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -10 AND 10),"
    "  ADD COLUMN cancel_reason text,"
    "  ADD COLUMN cancelled_by text;"
    "ALTER TABLE job_tasks ADD COLUMN priority integer NOT NULL DEFAULT 0;"
    "DROP INDEX job_tasks_open;"
    "CREATE INDEX job_tasks_open ON job_tasks (priority DESC, created_at, job_id, combination)"
    "  WHERE status IN ('pending', 'processing');"
    "CREATE INDEX jobs_newest ON jobs (created_at DESC, id DESC);"
    "CREATE INDEX attachments_newest ON attachments (created_at DESC);"
    /* the cancel event says who and why */
    "CREATE OR REPLACE FUNCTION jobs_events() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  IF TG_OP = 'INSERT' THEN\n"
    "    PERFORM job_event_stage(NEW.id, 'created', jsonb_build_object('job_id', NEW.id,"
    "      'job_status', NEW.status, 'prompt', NEW.prompt, 'total_images', NEW.total_images,"
    "      'priority', NEW.priority, 'created_at', ij_iso(NEW.created_at)));\n"
    "    RETURN NULL;\n"
    "  END IF;\n"
    "  IF OLD.status = 'pending' AND NEW.status = 'processing' THEN\n"
    "    PERFORM job_event_stage(NEW.id, 'started', jsonb_build_object('job_id', NEW.id,"
    "      'started_at', ij_iso(NEW.started_at)));\n"
    "  END IF;\n"
    "  IF NEW.cancel_requested_at IS NOT NULL AND (OLD.cancel_requested_at IS NULL"
    "      OR OLD.cancel_mode IS DISTINCT FROM NEW.cancel_mode) THEN\n"
    "    PERFORM job_event_stage(NEW.id, 'cancel', jsonb_build_object('job_id', NEW.id,"
    "      'cancel_requested_at', ij_iso(NEW.cancel_requested_at), 'mode', NEW.cancel_mode,"
    "      'reason', COALESCE(NEW.cancel_reason, 'user'), 'cancelled_by', NEW.cancelled_by));\n"
    "  END IF;\n"
    "  IF OLD.status IN ('pending', 'processing')"
    "      AND NEW.status NOT IN ('pending', 'processing') THEN\n"
    "    PERFORM job_event_stage(NEW.id, 'end', jsonb_build_object('job_id', NEW.id,"
    "      'job_status', NEW.status, 'completed_images', NEW.completed_images,"
    "      'total_images', NEW.total_images,"
    "      'generated_attach_ids', to_jsonb(NEW.generated_attach_ids),"
    "      'finished_at', ij_iso(NEW.finished_at), 'error', NEW.error));\n"
    "  END IF;\n"
    "  RETURN NULL;\n"
    "END$$;"
    /* combinations claimed before the job's first: pending ones of jobs not
     * cancelled, ahead in the claim's order */
    "CREATE FUNCTION ij_queue_position(j jobs) RETURNS bigint LANGUAGE sql STABLE AS $$"
    "  SELECT count(*) FROM job_tasks t JOIN jobs x ON x.id = t.job_id"
    "  WHERE t.status = 'pending' AND x.cancel_requested_at IS NULL AND x.id <> j.id"
    "    AND (t.priority > j.priority OR (t.priority = j.priority"
    "         AND (t.created_at, t.job_id) < (j.created_at, j.id)))$$;"
    /* pixel-steps per second over the last 200 images recorded (by every
     * instance), NULL before there are two of them */
    "CREATE FUNCTION ij_rate() RETURNS float8 LANGUAGE sql STABLE AS $$"
    "  SELECT CASE WHEN count(*) >= 2 AND max(a.created_at) > min(a.created_at) THEN"
    "    sum(a.width::float8 * a.height * (x.params ->> 'steps')::int) * (count(*) - 1)"
    "    / count(*) / extract(epoch FROM max(a.created_at) - min(a.created_at))::float8 END"
    "  FROM (SELECT job_id, width, height, created_at FROM attachments"
    "        ORDER BY created_at DESC LIMIT 200) a JOIN jobs x ON x.id = a.job_id$$;"
    /* seconds until the job is done: the work still to do in every running
     * combination and in the pending ones ahead of it, and its own, at the
     * measured rate */
    "CREATE FUNCTION ij_eta(j jobs) RETURNS float8 LANGUAGE sql STABLE AS $$"
    "  SELECT round((sum(((x.params ->> 'images_per_combination')::int - t.completed_images)"
    "      * (x.params ->> 'width')::float8 * (x.params ->> 'height')::int"
    "      * (x.params ->> 'steps')::int) / ij_rate())::numeric, 1)::float8"
    "  FROM job_tasks t JOIN jobs x ON x.id = t.job_id"
    "  WHERE t.status IN ('pending', 'processing') AND x.cancel_requested_at IS NULL"
    "    AND (t.status = 'processing' OR x.id = j.id OR t.priority > j.priority"
    "         OR (t.priority = j.priority AND (t.created_at, t.job_id) < (j.created_at, j.id)))$$;",

    /* 4: idempotent create (docs/api.md): an Idempotency-Key names one job
     * for 24 hours, with the hash of the request it came with */
    "CREATE TABLE idempotency_keys ("
    "  key text PRIMARY KEY,"
    "  body_hash bytea NOT NULL,"
    "  job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  created_at timestamptz NOT NULL DEFAULT clock_timestamp());"
    "CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);",

    /* 5: resume (docs/api.md): a resumed job's combinations start at the
     * first image the original did not make */
    "ALTER TABLE jobs ADD COLUMN resumed_from uuid REFERENCES jobs (id),"
    "  ADD COLUMN resumed_by uuid REFERENCES jobs (id);"
    "ALTER TABLE job_tasks ADD COLUMN start_index integer NOT NULL DEFAULT 0"
    "  CHECK (start_index >= 0);",

    /* 6: a combination cancelled on its own (docs/api.md) */
    "ALTER TABLE job_tasks ADD COLUMN cancel_requested_at timestamptz,"
    "  ADD COLUMN cancel_mode text CHECK (cancel_mode IN ('immediate', 'after_current_image')),"
    "  ADD COLUMN cancelled_by text;",

    /* 7: deadlines (docs/api.md): the job is cancelled by whichever
     * instance's timer takes it first once due_at (the earliest deadline
     * that still applies) has passed */
    "ALTER TABLE jobs ADD COLUMN cancel_after_s integer CHECK (cancel_after_s > 0),"
    "  ADD COLUMN start_within_s integer CHECK (start_within_s > 0),"
    "  ADD COLUMN due_at timestamptz;"
    "CREATE INDEX jobs_due ON jobs (due_at)"
    "  WHERE due_at IS NOT NULL AND status IN ('pending', 'processing');",

    /* 8: linear where they were quadratic (bench/queue): the safety net of
     * the numbering looks up its own row, instead of counting what is left
     * unnumbered once per staged row (1,000 cancelled jobs took 228 ms at
     * commit); and a job's ETA counts the work ahead of it once, as the
     * list computes it for a whole page (and minds a resumed job's
     * start_index) */
    "CREATE OR REPLACE FUNCTION job_events_number_late() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  IF EXISTS (SELECT 1 FROM job_events WHERE n = NEW.n AND seq IS NULL) THEN\n"
    "    PERFORM * FROM job_events_number();\n"
    "  END IF;\n"
    "  RETURN NULL;\n"
    "END$$;"
    /* the work left in a combination, in pixel-steps */
    "CREATE FUNCTION ij_work(t job_tasks, x jobs) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$"
    "  SELECT ((x.params ->> 'images_per_combination')::int - t.start_index - t.completed_images)"
    "    * (x.params ->> 'width')::float8 * (x.params ->> 'height')::int"
    "    * (x.params ->> 'steps')::int$$;"
    /* seconds until the job is done: every running combination's work, and,
     * while it has combinations waiting, the waiting work up to them in the
     * claim order (its own included), at the measured rate. A job whose
     * combinations all run waits for nobody's queue. */
    "CREATE OR REPLACE FUNCTION ij_eta(j jobs) RETURNS float8 LANGUAGE sql STABLE AS $$"
    "  SELECT round((((SELECT COALESCE(sum(ij_work(t, x)), 0) FROM job_tasks t"
    "                  JOIN jobs x ON x.id = t.job_id"
    "                  WHERE t.status = 'processing' AND x.cancel_requested_at IS NULL)"
    "    + CASE WHEN EXISTS (SELECT 1 FROM job_tasks o WHERE o.job_id = j.id"
    "                        AND o.status = 'pending')"
    "      THEN (SELECT COALESCE(sum(ij_work(t, x)), 0) FROM job_tasks t"
    "            JOIN jobs x ON x.id = t.job_id"
    "            WHERE t.status = 'pending' AND x.cancel_requested_at IS NULL"
    "              AND (t.priority > j.priority OR (t.priority = j.priority"
    "                   AND (t.created_at, t.job_id) <= (j.created_at, j.id))))"
    "      ELSE 0 END) / ij_rate())::numeric, 1)::float8$$;",
    /* 9: API keys, ownership, quotas and fair claims (docs/security.md).
     * A key is stored as the SHA-256 of its token, never the token. A job
     * (and its combinations, for the claim's index) belongs to the key that
     * made it; NULL / 0: made with auth off. key_clock moves with every
     * change an instance's key cache must see (a key made, revoked). */
    "CREATE TABLE api_keys ("
    "  id bigserial PRIMARY KEY,"
    "  name text NOT NULL CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),"
    "  token_hash bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),"
    "  admin boolean NOT NULL DEFAULT false,"
    "  max_running_jobs integer CHECK (max_running_jobs > 0),"
    "  max_pending_jobs integer CHECK (max_pending_jobs > 0),"
    "  rate_per_s float8 CHECK (rate_per_s > 0),"
    "  rate_burst float8 CHECK (rate_burst >= 1),"
    "  bucket float8,"
    "  bucket_at timestamptz,"
    "  running_jobs integer NOT NULL DEFAULT 0,"
    "  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    "  revoked_at timestamptz);"
    "CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;"
    "CREATE TABLE key_clock ("
    "  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),"
    "  version bigint NOT NULL);"
    "INSERT INTO key_clock (only_row, version) VALUES (true, 1);"
    "CREATE FUNCTION api_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  UPDATE key_clock SET version = version + 1;\n"
    "  RETURN NULL;\n"
    "END$$;"
    "CREATE TRIGGER api_keys_changed AFTER INSERT OR DELETE"
    "  OR UPDATE OF name, token_hash, admin, revoked_at ON api_keys"
    "  FOR EACH STATEMENT EXECUTE FUNCTION api_keys_changed();"
    "ALTER TABLE jobs ADD COLUMN owner_key bigint REFERENCES api_keys (id);"
    "ALTER TABLE job_tasks ADD COLUMN owner_key bigint NOT NULL DEFAULT 0;"
    "ALTER TABLE job_events ADD COLUMN owner_key bigint;"
    "CREATE INDEX jobs_owner_newest ON jobs (owner_key, created_at DESC, id DESC)"
    "  WHERE owner_key IS NOT NULL;"
    "CREATE INDEX jobs_owner_pending ON jobs (owner_key) WHERE status = 'pending';"
    "CREATE INDEX job_tasks_owner_open"
    "  ON job_tasks (owner_key, priority DESC, created_at, job_id, combination)"
    "  WHERE status IN ('pending', 'processing');"
    "CREATE INDEX job_tasks_owner_started ON job_tasks (owner_key, started_at)"
    "  WHERE started_at IS NOT NULL;"
    "CREATE INDEX job_events_of_owner ON job_events (owner_key, seq) WHERE owner_key IS NOT NULL;"
    /* an Idempotency-Key is the key's own: two keys may use the same one */
    "ALTER TABLE idempotency_keys ADD COLUMN owner_key bigint NOT NULL DEFAULT 0;"
    "ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey,"
    "  ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (owner_key, key);"
    /* the key's running jobs, counted as they start and end: the claim's
     * limit reads it under the key's row lock (docs/store.md) */
    "CREATE FUNCTION jobs_running_count() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  UPDATE api_keys SET running_jobs = running_jobs + (NEW.status = 'processing')::int"
    "    - (OLD.status = 'processing')::int WHERE id = NEW.owner_key;\n"
    "  RETURN NULL;\n"
    "END$$;"
    "CREATE TRIGGER jobs_running AFTER UPDATE OF status ON jobs FOR EACH ROW"
    "  WHEN (NEW.owner_key IS NOT NULL"
    "        AND (OLD.status = 'processing') <> (NEW.status = 'processing'))"
    "  EXECUTE FUNCTION jobs_running_count();"
    /* a create by key k, under k's row lock (creates of one key take
     * turns on every instance): refused past its pending-jobs limit, or
     * when its token bucket is empty (refill rate_per_s, at most
     * rate_burst), with the seconds to wait in the error's detail. A
     * refused create rolls back: it takes no token. */
    "CREATE FUNCTION ij_key_admit(k bigint) RETURNS void LANGUAGE plpgsql AS $$\n"
    "DECLARE r api_keys; tokens float8; waiting bigint;\n"
    "BEGIN\n"
    "  IF k IS NULL OR k = 0 THEN RETURN; END IF;\n"
    "  SELECT * INTO r FROM api_keys WHERE id = k FOR UPDATE;\n"
    "  IF NOT FOUND OR r.revoked_at IS NOT NULL THEN\n"
    "    RAISE EXCEPTION 'the API key was revoked' USING ERRCODE = 'IJ401';\n"
    "  END IF;\n"
    "  IF r.max_pending_jobs IS NOT NULL THEN\n"
    "    SELECT count(*) INTO waiting FROM jobs WHERE owner_key = k AND status = 'pending';\n"
    "    IF waiting >= r.max_pending_jobs THEN\n"
    "      RAISE EXCEPTION 'this key has % jobs pending, its limit: wait for one to start',"
    "        waiting USING ERRCODE = 'IJ429', DETAIL = '1';\n"
    "    END IF;\n"
    "  END IF;\n"
    "  IF r.rate_per_s IS NOT NULL THEN\n"
    "    tokens := LEAST(r.rate_burst, COALESCE(r.bucket, r.rate_burst) + r.rate_per_s"
    "      * GREATEST(0, extract(epoch FROM clock_timestamp()"
    "                       - COALESCE(r.bucket_at, clock_timestamp()))));\n"
    "    IF tokens < 1 THEN\n"
    "      RAISE EXCEPTION 'rate limit: this key may create % jobs a second', r.rate_per_s"
    "        USING ERRCODE = 'IJ429', DETAIL = ceil((1 - tokens) / r.rate_per_s)::text;\n"
    "    END IF;\n"
    "    UPDATE api_keys SET bucket = tokens - 1, bucket_at = clock_timestamp() WHERE id = k;\n"
    "  END IF;\n"
    "END$$;"
    /* events carry their job's owner: a key's event stream shows its own */
    "DROP FUNCTION job_events_number();"
    "CREATE FUNCTION job_events_number()"
    "  RETURNS TABLE (seq bigint, job_id uuid, kind text, job_status text, data text,"
    "                 log_id uuid, owner_key bigint)"
    "  LANGUAGE plpgsql AS $$\n"
    "#variable_conflict use_column\n"
    "DECLARE cnt bigint; base bigint; log uuid;\n"
    "BEGIN\n"
    "  SELECT count(*) INTO cnt FROM job_events e WHERE e.seq IS NULL;\n"
    "  IF cnt = 0 THEN RETURN; END IF;\n"
    "  UPDATE event_clock c SET seq = c.seq + cnt RETURNING c.seq - cnt, c.log_id"
    "    INTO base, log;\n"
    "  RETURN QUERY WITH o AS ("
    "      SELECT e.n, row_number() OVER (ORDER BY CASE e.kind WHEN 'created' THEN 0"
    "        WHEN 'started' THEN 1 WHEN 'image' THEN 2 WHEN 'cancel' THEN 3"
    "        WHEN 'stopped' THEN 4 ELSE 5 END, e.n) AS k"
    "      FROM job_events e WHERE e.seq IS NULL),"
    "    u AS ("
    "      UPDATE job_events e SET seq = base + o.k, job_status = j.status,"
    "        owner_key = j.owner_key"
    "      FROM o, jobs j WHERE e.n = o.n AND j.id = e.job_id"
    "      RETURNING e.seq, e.job_id, e.kind, e.job_status, e.data::text, log, e.owner_key)"
    "    SELECT * FROM u ORDER BY 1;\n"
    "END$$;",

    /* 10: webhooks (docs/webhooks.md): a job's webhook, and the outbox of
     * its deliveries. A delivery row is written when its event is numbered
     * (a trigger on job_events.seq: in the transaction of the change it
     * reports, with the event's place on the clock for the per-job order),
     * and taken by any instance's webhook actor FOR UPDATE SKIP LOCKED.
     * next_at is when a pending row is due and, once it is claimed, the end
     * of the claim's lease, after which any instance takes it again. */
    "ALTER TABLE jobs ADD COLUMN webhook_url text,"
    "  ADD COLUMN webhook_events text[] CHECK (webhook_events"
    "    <@ '{started,image,completed,cancelled,failed}'::text[]"
    "    AND cardinality(webhook_events) > 0);"
    "CREATE TABLE webhook_deliveries ("
    "  id uuid PRIMARY KEY,"
    "  job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    "  seq bigint NOT NULL,"
    "  event text NOT NULL CHECK (event IN"
    "    ('started', 'image', 'completed', 'cancelled', 'failed')),"
    "  url text NOT NULL,"
    "  body text NOT NULL,"
    "  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),"
    "  attempts integer NOT NULL DEFAULT 0,"
    "  next_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    "  claimed_by text,"
    "  last_status integer,"
    "  last_error text,"
    "  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    "  delivered_at timestamptz,"
    "  UNIQUE (job_id, seq));"
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending';"
    /* the payload as of the commit (the numbering is a transaction's last
     * statement); the body is kept as sent, byte for byte, since the
     * signature covers those bytes */
    "CREATE FUNCTION webhook_stage() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "DECLARE j jobs; ev text; d uuid;\n"
    "BEGIN\n"
    "  SELECT * INTO j FROM jobs WHERE id = NEW.job_id AND webhook_url IS NOT NULL;\n"
    "  IF NOT FOUND THEN RETURN NULL; END IF;\n"
    "  ev := CASE WHEN NEW.kind <> 'end' THEN NEW.kind"
    "    WHEN NEW.data ->> 'job_status' = 'completed' THEN 'completed'"
    "    WHEN NEW.data ->> 'job_status' = 'failed' THEN 'failed' ELSE 'cancelled' END;\n"
    "  IF NOT ev = ANY (j.webhook_events) THEN RETURN NULL; END IF;\n"
    "  d := gen_random_uuid();\n"
    "  INSERT INTO webhook_deliveries (id, job_id, seq, event, url, body)"
    "  VALUES (d, j.id, NEW.seq, ev, j.webhook_url, jsonb_build_object("
    "    'event', ev, 'delivery_id', d, 'event_seq', NEW.seq, 'job_id', j.id,"
    "    'job_status', COALESCE(NEW.data ->> 'job_status', NEW.job_status),"
    "    'completed_images', COALESCE((NEW.data ->> 'completed_images')::int, j.completed_images),"
    "    'total_images', j.total_images,"
    "    'generated_attach_ids', COALESCE(NEW.data -> 'generated_attach_ids',"
    "                                     to_jsonb(j.generated_attach_ids)),"
    "    'image', CASE WHEN NEW.kind = 'image' THEN jsonb_build_object("
    "      'combination', NEW.data -> 'combination', 'image_index', NEW.data -> 'image_index',"
    "      'attach_id', NEW.data -> 'attach_id') END,"
    "    'cancel_reason', j.cancel_reason,"
    "    'occurred_at', ij_iso(NEW.staged_at), 'created_at', ij_iso(j.created_at),"
    "    'started_at', ij_iso(j.started_at), 'cancel_requested_at', ij_iso(j.cancel_requested_at),"
    "    'finished_at', ij_iso(j.finished_at))::text);\n"
    "  RETURN NULL;\n"
    "END$$;"
    "CREATE TRIGGER job_events_webhook AFTER UPDATE OF seq ON job_events FOR EACH ROW"
    "  WHEN (OLD.seq IS NULL AND NEW.seq IS NOT NULL AND NEW.kind IN ('started', 'image', 'end'))"
    "  EXECUTE FUNCTION webhook_stage();",

    /* 11: the queue's figures as PL/pgSQL, which keeps its statements'
     * plans for the connection: as SQL functions called once per document
     * they were planned anew on every GET (planning ~1.5 ms each, bench/api
     * "GET of a waiting job"), more than the reads themselves */
    "CREATE OR REPLACE FUNCTION ij_rate() RETURNS float8 LANGUAGE plpgsql STABLE AS $$\n"
    "BEGIN\n"
    "  RETURN (SELECT CASE WHEN count(*) >= 2 AND max(a.created_at) > min(a.created_at) THEN\n"
    "    sum(a.width::float8 * a.height * (x.params ->> 'steps')::int) * (count(*) - 1)\n"
    "    / count(*) / extract(epoch FROM max(a.created_at) - min(a.created_at))::float8 END\n"
    "  FROM (SELECT job_id, width, height, created_at FROM attachments\n"
    "        ORDER BY created_at DESC LIMIT 200) a JOIN jobs x ON x.id = a.job_id);\n"
    "END$$;\n"
    "CREATE OR REPLACE FUNCTION ij_queue_position(j jobs) RETURNS bigint LANGUAGE plpgsql STABLE AS $$\n"
    "BEGIN\n"
    "  RETURN (SELECT count(*) FROM job_tasks t JOIN jobs x ON x.id = t.job_id\n"
    "  WHERE t.status = 'pending' AND x.cancel_requested_at IS NULL AND x.id <> j.id\n"
    "    AND (t.priority > j.priority OR (t.priority = j.priority\n"
    "         AND (t.created_at, t.job_id) < (j.created_at, j.id))));\n"
    "END$$;\n"
    "CREATE OR REPLACE FUNCTION ij_eta(j jobs) RETURNS float8 LANGUAGE plpgsql STABLE AS $$\n"
    "BEGIN\n"
    "  RETURN (SELECT round((((SELECT COALESCE(sum(ij_work(t, x)), 0) FROM job_tasks t\n"
    "                  JOIN jobs x ON x.id = t.job_id\n"
    "                  WHERE t.status = 'processing' AND x.cancel_requested_at IS NULL)\n"
    "    + CASE WHEN EXISTS (SELECT 1 FROM job_tasks o WHERE o.job_id = j.id\n"
    "                        AND o.status = 'pending')\n"
    "      THEN (SELECT COALESCE(sum(ij_work(t, x)), 0) FROM job_tasks t\n"
    "            JOIN jobs x ON x.id = t.job_id\n"
    "            WHERE t.status = 'pending' AND x.cancel_requested_at IS NULL\n"
    "              AND (t.priority > j.priority OR (t.priority = j.priority\n"
    "                   AND (t.created_at, t.job_id) <= (j.created_at, j.id))))\n"
    "      ELSE 0 END) / ij_rate())::numeric, 1)::float8);\n"
    "END$$;\n",

    /* 12: the job view (docs/store.md, "The job view and its consistency
     * rule") needs every change of a job's GET document on the event
     * clock. These changed it without an event: a claim of a combination
     * of a job already running (or a takeover after a lapsed lease), a
     * release, a combination's cancel mark, the cancel's audit written
     * after a stop recorded the cancel, and resumed_by set on the
     * original by a resume. Each now stages a `changed` event (never sent
     * to a stream), unless the same row change already stages another. */
    "ALTER TABLE job_events DROP CONSTRAINT job_events_kind_check,"
    "  ADD CONSTRAINT job_events_kind_check CHECK (kind IN"
    "    ('created', 'started', 'image', 'cancel', 'stopped', 'end', 'changed'));"
    "CREATE FUNCTION jobs_changed_events() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  PERFORM job_event_stage(NEW.id, 'changed', jsonb_build_object('job_id', NEW.id));\n"
    "  RETURN NULL;\n"
    "END$$;"
    "CREATE TRIGGER jobs_changed_quietly AFTER UPDATE ON jobs FOR EACH ROW"
    "  WHEN ((OLD.resumed_by IS DISTINCT FROM NEW.resumed_by"
    "         OR OLD.cancelled_by IS DISTINCT FROM NEW.cancelled_by"
    "         OR OLD.cancel_reason IS DISTINCT FROM NEW.cancel_reason)"
    "        AND OLD.status IS NOT DISTINCT FROM NEW.status"
    "        AND OLD.cancel_mode IS NOT DISTINCT FROM NEW.cancel_mode"
    "        AND OLD.cancel_requested_at IS NOT DISTINCT FROM NEW.cancel_requested_at)"
    "  EXECUTE FUNCTION jobs_changed_events();"
    "CREATE FUNCTION job_tasks_changed_events() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    "  PERFORM job_event_stage(NEW.job_id, 'changed', jsonb_build_object('job_id', NEW.job_id,"
    "    'combination', NEW.combination));\n"
    "  RETURN NULL;\n"
    "END$$;"
    "CREATE TRIGGER job_tasks_changed AFTER UPDATE ON job_tasks FOR EACH ROW"
    "  WHEN ((OLD.status IS DISTINCT FROM NEW.status"
    "         OR OLD.claimed_by IS DISTINCT FROM NEW.claimed_by"
    "         OR OLD.started_at IS DISTINCT FROM NEW.started_at"
    "         OR OLD.cancel_requested_at IS DISTINCT FROM NEW.cancel_requested_at"
    "         OR OLD.cancelled_by IS DISTINCT FROM NEW.cancelled_by"
    "         OR OLD.cancel_observed_at IS DISTINCT FROM NEW.cancel_observed_at"
    "         OR OLD.stopped_at IS DISTINCT FROM NEW.stopped_at"
    "         OR OLD.error IS DISTINCT FROM NEW.error)"
    "        AND NOT (OLD.status IN ('pending', 'processing')"
    "                 AND NEW.status IN ('completed', 'cancelled', 'failed')))"
    "  EXECUTE FUNCTION job_tasks_changed_events();",
};

static void s_quiet(void *arg, const char *message) {}

/* Runs sql (may hold several statements); -1 with the reason in err. */
static int s_exec(PGconn *c, const char *sql, PGresult **out, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType es = PQresultStatus(r);
    if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK) {
        char msg[300];
        pgpipe_oneline(msg, sizeof msg, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        if (state && strcmp(state, "55P03") == 0) /* lock_not_available */
            snprintf(err, errlen,
                     "schema migration failed: a lock was not granted within " MIGRATE_LOCK_TIMEOUT
                     " (another instance migrating?): %s",
                     msg);
        else
            snprintf(err, errlen, "schema migration failed: %s", msg);
        PQclear(r);
        return -1;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return 0;
}

int store_migrate(const char *conninfo, char *err, size_t errlen)
{
    if (pgpipe_conninfo_check(conninfo, err, errlen) < 0)
        return -1;
    const char *const keys[] = {"application_name", "connect_timeout", "dbname", NULL};
    const char *const values[] = {"imagejobs-migrate", MIGRATE_CONNECT_TIMEOUT, conninfo, NULL};
    PGconn *c = PQconnectdbParams(keys, values, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        char msg[300];
        pgpipe_oneline(msg, sizeof msg, c ? PQerrorMessage(c) : "out of memory");
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s", msg);
        PQfinish(c);
        return -1;
    }
    PQsetNoticeProcessor(c, s_quiet, NULL); /* "already exists, skipping" */

    PGresult *r = NULL;
    int from = 0, rc = -1;
    /* Everything in one transaction under one advisory lock: a second
     * instance waits here (at most the lock timeout) and then finds the
     * work done. */
    if (s_exec(c, "SET lock_timeout = '" MIGRATE_LOCK_TIMEOUT "'", NULL, err, errlen) < 0
        || s_exec(c, "BEGIN", NULL, err, errlen) < 0
        || s_exec(c, "SELECT pg_advisory_xact_lock(" STORE_MIGRATE_LOCK_KEY ")", NULL, err, errlen)
               < 0
        || s_exec(c,
                  "CREATE TABLE IF NOT EXISTS schema_version ("
                  "  version integer PRIMARY KEY,"
                  "  applied_at timestamptz NOT NULL DEFAULT clock_timestamp())",
                  NULL, err, errlen)
               < 0
        || s_exec(c, "SELECT COALESCE(max(version), 0) FROM schema_version", &r, err, errlen) < 0)
        goto out;
    from = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (from > STORE_SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "database schema is at version %d, newer than this binary's %d: "
                 "upgrade imagejobs",
                 from, STORE_SCHEMA_VERSION);
        goto out;
    }
    for (int v = from + 1; v <= STORE_SCHEMA_VERSION; v++) {
        char record[96];
        snprintf(record, sizeof record, "INSERT INTO schema_version (version) VALUES (%d)", v);
        if (s_exec(c, s_migrations[v - 1], NULL, err, errlen) < 0
            || s_exec(c, record, NULL, err, errlen) < 0)
            goto out;
    }
    if (s_exec(c, "COMMIT", NULL, err, errlen) < 0)
        goto out;
    if (from == STORE_SCHEMA_VERSION)
        log_info("schema at version %d", from);
    else
        log_info("schema migrated from version %d to %d", from, STORE_SCHEMA_VERSION);
    rc = 0;
out:
    PQfinish(c); /* an open transaction is rolled back */
    return rc;
}
