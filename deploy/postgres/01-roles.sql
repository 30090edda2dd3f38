-- cbcm on PostgreSQL: two roles and one schema. Run as a superuser (or a role with
-- CREATEROLE) once per database, before the first start:
--   psql -v ON_ERROR_STOP=1 -d cbcm -f deploy/postgres/01-roles.sql
-- then, as the owner, make the tables and grant the application its rights, in one command:
--   CBCM_EVENT_STORE='postgresql://cbcm_owner@HOST/cbcm?schema=cbcm' cbcm db init --grant-to cbcm_app
-- (after an upgrade of cbcm: the same with `db migrate`). The services run as cbcm_app,
-- which can create nothing; they refuse to start while the schema is behind their version.
-- Set the passwords with ALTER ROLE ... PASSWORD, or use your own authentication.

CREATE ROLE cbcm_owner LOGIN;
CREATE ROLE cbcm_app LOGIN;
CREATE SCHEMA cbcm AUTHORIZATION cbcm_owner;
GRANT USAGE ON SCHEMA cbcm TO cbcm_app;
