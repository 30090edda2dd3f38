-- What the application's role may do, for schema cbcm and role cbcm_app: the output of
--   cbcm db grants --role cbcm_app
-- (a test keeps this file equal to it). Run by the tables' owner, in one go with the
-- tables themselves:
--   cbcm db init --grant-to cbcm_app        (a new store; `cbcm db migrate --grant-to` later)
-- or apply them alone with `cbcm db grants --role cbcm_app --apply`.
-- The event log, its hash chain, its Merkle tiles, the writer marks and the custody record:
-- INSERT and SELECT only; triggers refuse UPDATE, DELETE and TRUNCATE on them even for the
-- owner. The relay's position (eventsourcing's tracking table) moves forward by upsert. The
-- data keys of personal data: inserted with the events they protect; an erasure destroys a
-- key's material, rotation rewraps it: UPDATE of those columns only (triggers refuse DELETE,
-- a changed key identity, material put back into an erased key). The key ring: recorded once.
-- The schema version: read at every start. The application runs as this role; nothing
-- creates tables at start on PostgreSQL.
GRANT USAGE ON SCHEMA "cbcm" TO "cbcm_app";
GRANT SELECT, INSERT ON "cbcm"."cbcm_events", "cbcm"."cbcm_events_chain", "cbcm"."cbcm_events_tiles", "cbcm"."cbcm_events_writer", "cbcm"."cbcm_events_custody" TO "cbcm_app";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "cbcm" TO "cbcm_app";
GRANT SELECT, INSERT, UPDATE ON "cbcm"."cbcm_tracking" TO "cbcm_app";
GRANT SELECT, INSERT ON "cbcm"."cbcm_events_data_keys" TO "cbcm_app";
GRANT UPDATE (kek_id, wrapped, erased_at) ON "cbcm"."cbcm_events_data_keys" TO "cbcm_app";
GRANT SELECT, INSERT ON "cbcm"."cbcm_events_key_ring" TO "cbcm_app";
GRANT SELECT ON "cbcm"."cbcm_schema_version" TO "cbcm_app";
