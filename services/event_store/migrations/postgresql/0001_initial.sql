-- cbcm schema version 1: the release before migrations, as its start-up made it

CREATE TABLE IF NOT EXISTS "__cbcm_schema__"."cbcm_events" (originator_id "uuid" NOT NULL, originator_version bigint NOT NULL, topic text, state bytea, notification_id bigserial, PRIMARY KEY (originator_id, originator_version)) WITH (    autovacuum_enabled = true,    autovacuum_vacuum_threshold = 100000000,    autovacuum_vacuum_scale_factor = 0.5,    autovacuum_analyze_threshold = 1000,    autovacuum_analyze_scale_factor = 0.01);

DO $$ BEGIN CREATE TYPE "__cbcm_schema__"."stored_event_uuid" AS (originator_id "uuid", originator_version bigint, topic text, state bytea); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE UNIQUE INDEX IF NOT EXISTS "cbcm_events_notification_id_idx" ON "__cbcm_schema__"."cbcm_events" (notification_id ASC);

CREATE OR REPLACE FUNCTION "__cbcm_schema__"."es_insert_events_uuid"(events "__cbcm_schema__"."stored_event_uuid"[]) RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$BEGIN    SET LOCAL lock_timeout = '0s';    NOTIFY "cbcm_events";    RETURN QUERY    INSERT INTO "__cbcm_schema__"."cbcm_events" AS t (    originator_id, originator_version, topic, state)    SELECT originator_id, originator_version, topic, state    FROM unnest(events)    RETURNING notification_id;END;$BODY$;

CREATE TABLE IF NOT EXISTS "__cbcm_schema__"."cbcm_events_key_ring" (name text PRIMARY KEY, ring_id text NOT NULL, cipher text NOT NULL);

CREATE OR REPLACE FUNCTION "__cbcm_schema__"."cbcm_events_key_ring_stays"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the key ring of the store is recorded once'; END $$;

DO $$ BEGIN CREATE TRIGGER "cbcm_events_key_ring_stays" BEFORE UPDATE OR DELETE ON "__cbcm_schema__"."cbcm_events_key_ring" FOR EACH ROW EXECUTE FUNCTION "__cbcm_schema__"."cbcm_events_key_ring_stays"(); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS "__cbcm_schema__"."cbcm_events_data_keys" (scope uuid NOT NULL, subject text NOT NULL, generation integer NOT NULL, kek_id text, wrapped bytea, created_at timestamptz NOT NULL, erased_at timestamptz, PRIMARY KEY (scope, subject, generation));

CREATE OR REPLACE FUNCTION "__cbcm_schema__"."cbcm_events_data_keys_erased_stays"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF TG_OP = 'DELETE' THEN RAISE EXCEPTION 'data keys are never deleted: an erasure leaves a tombstone'; END IF; IF TG_OP = 'INSERT' THEN IF EXISTS (SELECT 1 FROM "__cbcm_schema__"."cbcm_events_data_keys" WHERE scope = NEW.scope AND subject = NEW.subject AND generation >= NEW.generation AND wrapped IS NULL) THEN RAISE EXCEPTION 'an erased data key stays erased'; END IF; RETURN NEW; END IF; IF NEW.scope <> OLD.scope OR NEW.subject <> OLD.subject OR NEW.generation <> OLD.generation OR NEW.created_at <> OLD.created_at THEN RAISE EXCEPTION 'the identity of a data key never changes'; END IF; IF OLD.wrapped IS NULL AND NEW.wrapped IS NOT NULL THEN RAISE EXCEPTION 'an erased data key stays erased'; END IF; RETURN NEW; END $$;

DO $$ BEGIN CREATE TRIGGER "cbcm_events_data_keys_keep" BEFORE INSERT OR UPDATE OR DELETE ON "__cbcm_schema__"."cbcm_events_data_keys" FOR EACH ROW EXECUTE FUNCTION "__cbcm_schema__"."cbcm_events_data_keys_erased_stays"(); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS "__cbcm_schema__"."cbcm_events_tiles" (level integer NOT NULL, idx bigint NOT NULL, hashes bytea NOT NULL, root bytea NOT NULL, first_position bigint NOT NULL, last_position bigint NOT NULL, PRIMARY KEY (level, idx));

CREATE INDEX IF NOT EXISTS "cbcm_events_tiles_by_position" ON "__cbcm_schema__"."cbcm_events_tiles" (level, last_position);

CREATE OR REPLACE FUNCTION "__cbcm_schema__"."cbcm_events_tiles_append_only"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the tiles of the tree are append-only: a tile is never updated or deleted'; END $$;

DO $$ BEGIN CREATE TRIGGER "cbcm_events_tiles_no_row" BEFORE UPDATE OR DELETE ON "__cbcm_schema__"."cbcm_events_tiles" FOR EACH ROW EXECUTE FUNCTION "__cbcm_schema__"."cbcm_events_tiles_append_only"(); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN CREATE TRIGGER "cbcm_events_tiles_no_truncate" BEFORE TRUNCATE ON "__cbcm_schema__"."cbcm_events_tiles" FOR EACH STATEMENT EXECUTE FUNCTION "__cbcm_schema__"."cbcm_events_tiles_append_only"(); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS "__cbcm_schema__"."cbcm_events_writer" (position bigint PRIMARY KEY, first_position bigint NOT NULL, mac bytea NOT NULL);

CREATE TABLE IF NOT EXISTS "__cbcm_schema__"."cbcm_events_custody" (name text PRIMARY KEY, value text NOT NULL, position bigint NOT NULL);

CREATE TABLE IF NOT EXISTS "__cbcm_schema__"."cbcm_events_chain" (position bigint PRIMARY KEY, previous_position bigint NOT NULL, link bytea NOT NULL);

CREATE OR REPLACE FUNCTION "__cbcm_schema__"."cbcm_events_append_only"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the event log is append-only: events are never updated or deleted'; END $$;

DO $$ BEGIN CREATE TRIGGER "cbcm_events_no_row" BEFORE UPDATE OR DELETE ON "__cbcm_schema__"."cbcm_events" FOR EACH ROW EXECUTE FUNCTION "__cbcm_schema__"."cbcm_events_append_only"(); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN CREATE TRIGGER "cbcm_events_no_truncate" BEFORE TRUNCATE ON "__cbcm_schema__"."cbcm_events" FOR EACH STATEMENT EXECUTE FUNCTION "__cbcm_schema__"."cbcm_events_append_only"(); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN CREATE TRIGGER "cbcm_events_chain_no_row" BEFORE UPDATE OR DELETE ON "__cbcm_schema__"."cbcm_events_chain" FOR EACH ROW EXECUTE FUNCTION "__cbcm_schema__"."cbcm_events_append_only"(); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN CREATE TRIGGER "cbcm_events_chain_no_truncate" BEFORE TRUNCATE ON "__cbcm_schema__"."cbcm_events_chain" FOR EACH STATEMENT EXECUTE FUNCTION "__cbcm_schema__"."cbcm_events_append_only"(); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN CREATE TRIGGER "cbcm_events_writer_no_row" BEFORE UPDATE OR DELETE ON "__cbcm_schema__"."cbcm_events_writer" FOR EACH ROW EXECUTE FUNCTION "__cbcm_schema__"."cbcm_events_append_only"(); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN CREATE TRIGGER "cbcm_events_writer_no_truncate" BEFORE TRUNCATE ON "__cbcm_schema__"."cbcm_events_writer" FOR EACH STATEMENT EXECUTE FUNCTION "__cbcm_schema__"."cbcm_events_append_only"(); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN CREATE TRIGGER "cbcm_events_custody_no_row" BEFORE UPDATE OR DELETE ON "__cbcm_schema__"."cbcm_events_custody" FOR EACH ROW EXECUTE FUNCTION "__cbcm_schema__"."cbcm_events_append_only"(); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN CREATE TRIGGER "cbcm_events_custody_no_truncate" BEFORE TRUNCATE ON "__cbcm_schema__"."cbcm_events_custody" FOR EACH STATEMENT EXECUTE FUNCTION "__cbcm_schema__"."cbcm_events_append_only"(); EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS "__cbcm_schema__"."cbcm_tracking" (application_name text, notification_id bigint, PRIMARY KEY (application_name))WITH (    autovacuum_enabled = true,    autovacuum_vacuum_threshold = 100000000,    autovacuum_vacuum_scale_factor = 0.5,    autovacuum_analyze_threshold = 1000,    autovacuum_analyze_scale_factor = 0.01);

INSERT INTO "__cbcm_schema__"."cbcm_tracking" VALUES ('__migration__', 1) ON CONFLICT (application_name) DO NOTHING;
