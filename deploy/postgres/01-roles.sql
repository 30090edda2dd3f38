-- cbcm on PostgreSQL: two roles and one schema. Run as a superuser (or a role with
-- CREATEROLE) once per database, before the first start:
--   psql -v ON_ERROR_STOP=1 -d cbcm -f deploy/postgres/01-roles.sql
-- then create the tables as the owner (any cbcm command creates them, e.g.
--   CBCM_EVENT_STORE=postgresql://cbcm_owner:...@host/cbcm?schema=cbcm cbcm audit verify
-- ), then grant the application its rights with 02-grants.sql.
-- Set the passwords with ALTER ROLE ... PASSWORD, or use your own authentication.

CREATE ROLE cbcm_owner LOGIN;
CREATE ROLE cbcm_app LOGIN;
CREATE SCHEMA cbcm AUTHORIZATION cbcm_owner;
GRANT USAGE ON SCHEMA cbcm TO cbcm_app;
