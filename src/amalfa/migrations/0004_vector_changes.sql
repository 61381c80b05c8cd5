-- The vector change log: which rows' embeddings changed, in commit order, fed by triggers that
-- are part of the schema, so every writer (amalfa in any process, the stdlib sqlite3 module, the
-- original TypeScript system) feeds it. amalfa.vectors.VectorEngine keeps a cached matrix that
-- remembers the last seq it reflects and re-reads only the rows logged after it.
--
-- source is the table ('nodes' here; 'passages' from 0005), row_id that table's rowid. An insert
-- or an update of the embedding logs deleted = 0, a delete or the embedding set to NULL logs
-- deleted = 1. Readers treat the log as "these rows changed" and re-read them, so a row logged
-- twice, or logged by a statement that did not change it in the end, costs only a re-read.
--
-- The log is pruned by a trigger (every writer prunes, no process has to run a job): every 4096th
-- entry deletes the entries more than 65536 older. A reader that fell further behind than that
-- sees a gap (min(seq) above the seq it remembers + 1) and reloads fully, which the reader does
-- anyway long before 65536 changes for any cache smaller than ~260k rows (see vectors.py).

-- database_id names this database for caches kept beside it (the vector snapshot of
-- amalfa.vector_snapshot): a snapshot made for another database is never trusted.
INSERT OR IGNORE INTO amalfa_meta (key, value) VALUES ('database_id', lower(hex(randomblob(16))));

CREATE TABLE IF NOT EXISTS vector_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    row_id INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);

-- INSERT OR REPLACE (used by other clients) deletes the conflicting row without firing delete
-- triggers (recursive_triggers is off by default) and the new row may get another rowid: log the
-- old row first. An upsert (ON CONFLICT DO UPDATE) fires this too; the update that follows logs
-- the same rowid again, so the reader re-reads the row once.
CREATE TRIGGER IF NOT EXISTS nodes_vector_replace BEFORE INSERT ON nodes
WHEN NEW.id IN (SELECT id FROM nodes)
BEGIN
    INSERT INTO vector_changes (source, row_id, deleted)
    SELECT 'nodes', rowid, 1 FROM nodes WHERE id = NEW.id AND embedding IS NOT NULL;
END;

CREATE TRIGGER IF NOT EXISTS nodes_vector_insert AFTER INSERT ON nodes
WHEN NEW.embedding IS NOT NULL
BEGIN
    INSERT INTO vector_changes (source, row_id, deleted) VALUES ('nodes', NEW.rowid, 0);
END;

-- Any update that changes the embedding (or, rarely, the rowid): `UPDATE OF embedding` would
-- miss a rowid change, and the WHEN clause keeps meta/title updates out of the log.
CREATE TRIGGER IF NOT EXISTS nodes_vector_update AFTER UPDATE ON nodes
WHEN NEW.embedding IS NOT OLD.embedding OR NEW.rowid <> OLD.rowid
BEGIN
    INSERT INTO vector_changes (source, row_id, deleted)
    SELECT 'nodes', OLD.rowid, 1 WHERE NEW.rowid <> OLD.rowid;
    INSERT INTO vector_changes (source, row_id, deleted)
    VALUES ('nodes', NEW.rowid, NEW.embedding IS NULL);
END;

CREATE TRIGGER IF NOT EXISTS nodes_vector_delete AFTER DELETE ON nodes
WHEN OLD.embedding IS NOT NULL
BEGIN
    INSERT INTO vector_changes (source, row_id, deleted) VALUES ('nodes', OLD.rowid, 1);
END;

CREATE TRIGGER IF NOT EXISTS vector_changes_prune AFTER INSERT ON vector_changes
WHEN NEW.seq % 4096 = 0
BEGIN
    DELETE FROM vector_changes WHERE seq <= NEW.seq - 65536;
END;
