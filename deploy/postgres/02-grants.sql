-- What the application's role may do, once the owner has created the tables
-- (run as cbcm_owner or a superuser):
--   psql -v ON_ERROR_STOP=1 -d cbcm -f deploy/postgres/02-grants.sql
-- The event log and its hash chain: INSERT and SELECT only. Triggers refuse UPDATE, DELETE
-- and TRUNCATE on them even for the owner; without UPDATE or DELETE the application's role
-- could not run such statements in the first place. The application runs with
-- CBCM_CREATE_TABLES=false, since it may not create anything.

GRANT SELECT, INSERT ON cbcm.cbcm_events, cbcm.cbcm_events_chain, cbcm.cbcm_events_tiles TO cbcm_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA cbcm TO cbcm_app;
-- The relay's position (eventsourcing's tracking table) moves forward by upsert.
GRANT SELECT, INSERT, UPDATE ON cbcm.cbcm_tracking TO cbcm_app;
-- The data keys of personal data (issue #6): inserted with the events they protect; an
-- erasure destroys a key's material, rotation rewraps it: UPDATE of those columns only.
-- Triggers refuse DELETE, a changed key identity, material put back into an erased key and
-- a key re-inserted behind its tombstone.
GRANT SELECT, INSERT ON cbcm.cbcm_events_data_keys TO cbcm_app;
GRANT UPDATE (kek_id, wrapped, erased_at) ON cbcm.cbcm_events_data_keys TO cbcm_app;
-- Which key ring and whole-event cipher the store is under: recorded once, by the first
-- process (a process with another ring is refused before it writes).
GRANT SELECT, INSERT ON cbcm.cbcm_events_key_ring TO cbcm_app;
-- Writer marks and the custody record (issue 15, ADR 14): a mark inserted with each commit;
-- the writer key's start and a new store's nonce recorded once. Triggers refuse UPDATE,
-- DELETE and TRUNCATE, as on the log.
GRANT SELECT, INSERT ON cbcm.cbcm_events_writer, cbcm.cbcm_events_custody TO cbcm_app;
