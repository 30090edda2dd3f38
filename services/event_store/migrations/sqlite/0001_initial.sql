-- cbcm schema version 1: the release before migrations, as its start-up made it

CREATE TABLE IF NOT EXISTS stored_events (originator_id TEXT, originator_version INTEGER, topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version));

CREATE TABLE IF NOT EXISTS stored_events_chain (position INTEGER PRIMARY KEY, previous_position INTEGER NOT NULL, link BLOB NOT NULL);

CREATE TRIGGER IF NOT EXISTS stored_events_no_update BEFORE UPDATE ON stored_events BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events are never updated or deleted'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_no_delete BEFORE DELETE ON stored_events BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events are never updated or deleted'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_chain_no_update BEFORE UPDATE ON stored_events_chain BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events are never updated or deleted'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_chain_no_delete BEFORE DELETE ON stored_events_chain BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events are never updated or deleted'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_no_replace BEFORE INSERT ON stored_events WHEN EXISTS (SELECT 1 FROM stored_events WHERE rowid = NEW.rowid OR (originator_id = NEW.originator_id AND originator_version = NEW.originator_version)) BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events are never updated or deleted'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_chain_no_replace BEFORE INSERT ON stored_events_chain WHEN EXISTS (SELECT 1 FROM stored_events_chain WHERE position = NEW.position) BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events are never updated or deleted'); END;

CREATE TABLE IF NOT EXISTS stored_events_key_ring (name TEXT PRIMARY KEY, ring_id TEXT NOT NULL, cipher TEXT NOT NULL);

CREATE TRIGGER IF NOT EXISTS stored_events_key_ring_stays BEFORE UPDATE ON stored_events_key_ring BEGIN SELECT RAISE(ABORT, 'the key ring of the store is recorded once'); END;

CREATE TABLE IF NOT EXISTS stored_events_data_keys (scope TEXT NOT NULL, subject TEXT NOT NULL, generation INTEGER NOT NULL, kek_id TEXT, wrapped BLOB, created_at TEXT NOT NULL, erased_at TEXT, PRIMARY KEY (scope, subject, generation));

CREATE TRIGGER IF NOT EXISTS stored_events_data_keys_erased_stays BEFORE UPDATE ON stored_events_data_keys WHEN OLD.wrapped IS NULL AND NEW.wrapped IS NOT NULL BEGIN SELECT RAISE(ABORT, 'an erased data key stays erased'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_data_keys_identity_stays BEFORE UPDATE ON stored_events_data_keys WHEN NEW.scope IS NOT OLD.scope OR NEW.subject IS NOT OLD.subject OR NEW.generation IS NOT OLD.generation OR NEW.created_at IS NOT OLD.created_at BEGIN SELECT RAISE(ABORT, 'the identity of a data key never changes'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_data_keys_no_resurrection BEFORE INSERT ON stored_events_data_keys WHEN EXISTS (SELECT 1 FROM stored_events_data_keys WHERE scope = NEW.scope AND subject = NEW.subject AND generation >= NEW.generation AND wrapped IS NULL) BEGIN SELECT RAISE(ABORT, 'an erased data key stays erased'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_data_keys_no_delete BEFORE DELETE ON stored_events_data_keys BEGIN SELECT RAISE(ABORT, 'data keys are never deleted: an erasure leaves a tombstone'); END;

CREATE TABLE IF NOT EXISTS stored_events_writer (position INTEGER PRIMARY KEY, first_position INTEGER NOT NULL, mac BLOB NOT NULL);

CREATE TABLE IF NOT EXISTS stored_events_custody (name TEXT PRIMARY KEY, value TEXT NOT NULL, position INTEGER NOT NULL);

CREATE TRIGGER IF NOT EXISTS stored_events_writer_no_update BEFORE UPDATE ON stored_events_writer BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events are never updated or deleted'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_writer_no_delete BEFORE DELETE ON stored_events_writer BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events are never updated or deleted'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_writer_no_replace BEFORE INSERT ON stored_events_writer WHEN EXISTS (SELECT 1 FROM stored_events_writer WHERE position = NEW.position) BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events are never updated or deleted'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_custody_no_update BEFORE UPDATE ON stored_events_custody BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events are never updated or deleted'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_custody_no_delete BEFORE DELETE ON stored_events_custody BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events are never updated or deleted'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_custody_no_replace BEFORE INSERT ON stored_events_custody WHEN EXISTS (SELECT 1 FROM stored_events_custody WHERE name = NEW.name) BEGIN SELECT RAISE(ABORT, 'the event log is append-only: events are never updated or deleted'); END;

CREATE TABLE IF NOT EXISTS stored_events_tiles (level INTEGER NOT NULL, idx INTEGER NOT NULL, hashes BLOB NOT NULL, root BLOB NOT NULL, first_position INTEGER NOT NULL, last_position INTEGER NOT NULL, PRIMARY KEY (level, idx));

CREATE INDEX IF NOT EXISTS stored_events_tiles_by_position ON stored_events_tiles (level, last_position);

CREATE TRIGGER IF NOT EXISTS stored_events_tiles_no_update BEFORE UPDATE ON stored_events_tiles BEGIN SELECT RAISE(ABORT, 'the tiles of the tree are append-only: a tile is never updated or deleted'); END;

CREATE TRIGGER IF NOT EXISTS stored_events_tiles_no_delete BEFORE DELETE ON stored_events_tiles BEGIN SELECT RAISE(ABORT, 'the tiles of the tree are append-only: a tile is never updated or deleted'); END;

CREATE TABLE IF NOT EXISTS tracking (application_name TEXT, notification_id INTEGER, PRIMARY KEY (application_name)) WITHOUT ROWID;

INSERT OR IGNORE INTO tracking VALUES ('__migration__', 1);
