-- cbcm read models on PostgreSQL (ADR 16, ADR 27): two roles, least privilege. Run as a
-- superuser (or a role with CREATEROLE) once, in the read models' database (it may be the
-- event store's, or another):
--   psql -v ON_ERROR_STOP=1 -d cbcm -f deploy/postgres/03-read-models.sql
-- then give CBCM_READ_MODEL_STORE as cbcm_projector to the projectors, the statistics
-- publisher and the relay (which records its stalls there), and as cbcm_reader to the API:
--   projectors, relay: postgresql://cbcm_projector:PASSWORD@HOST/cbcm?schema=cbcm
--   API:               postgresql://cbcm_reader:PASSWORD@HOST/cbcm?schema=cbcm
-- Set the passwords with ALTER ROLE ... PASSWORD, or use your own authentication.
--
-- cbcm_projector makes and owns a schema per read model (<prefix>_inbox, ...; a rebuild
-- --into makes another), the stall records' schema (<prefix>_status) and the statistics
-- release ledger's (<prefix>_stats_releases): it needs CREATE on the database and nothing
-- else. A release, once made, is refused any update or delete by triggers, for any statement
-- (the owner can still disable them: they stop mistakes and other roles, not the owner).
-- cbcm_reader may read whatever cbcm_projector makes, from the moment it makes it (default
-- privileges: USAGE on its schemas, SELECT on its tables), and can write or create nothing
-- (advisory locks are open to every role of the database: it could hold the publishers').

CREATE ROLE cbcm_projector LOGIN;
CREATE ROLE cbcm_reader LOGIN;
DO $$ BEGIN
    EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO cbcm_projector', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cbcm_reader', current_database());
END $$;
ALTER DEFAULT PRIVILEGES FOR ROLE cbcm_projector GRANT USAGE ON SCHEMAS TO cbcm_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE cbcm_projector GRANT SELECT ON TABLES TO cbcm_reader;
