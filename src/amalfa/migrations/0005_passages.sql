-- Passages: each Markdown document cut into heading-aware chunks (amalfa.ingest.passages), one
-- row per chunk with its FAFCAS embedding, tied to its document node. The nodes row and its
-- document-level embedding stay as they were; passages are what search ranks.
--
-- A row keeps where its text is in the file (line_start..line_end, 1-based, inclusive), its
-- heading path, the sha256 of what was embedded (hash, which incremental ingest compares), and
-- the passage as plain text with its heading context: the one copy the keyword index reads.
-- The file stays the source of truth: search compares the file with nodes.hash and marks a hit
-- stale instead of pointing at lines that moved.
--
-- passages_fts is the keyword index: FTS5 with external content (content='passages'), so it
-- holds the inverted index only and reads text from passages; no second copy of the text is
-- stored. A contentless table with contentless_delete=1 would store none at all, but it needs
-- SQLite 3.43 and a database is also opened by other clients (Python's sqlite3 module, the
-- original system) whose SQLite may be older: a virtual table they cannot open breaks their
-- dumps and, through these triggers, their cascading deletes. External content works with
-- any SQLite that has FTS5.
--
-- Triggers keep the index in step with the table for every writer, and log embedding changes
-- into vector_changes exactly as 0004 does for nodes, with source = 'passages'.

CREATE TABLE IF NOT EXISTS passages (
    id INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    heading TEXT,
    line_start INTEGER NOT NULL,
    line_end INTEGER NOT NULL,
    hash TEXT NOT NULL,
    context TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL DEFAULT '',
    embedding BLOB
);

CREATE INDEX IF NOT EXISTS passages_by_node ON passages (node_id, ordinal);

CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5 (
    context,
    text,
    content = 'passages',
    content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

-- INSERT OR REPLACE by another client deletes the conflicting row without delete triggers: log
-- the old vector and take the old row out of the index first.
CREATE TRIGGER IF NOT EXISTS passages_replace BEFORE INSERT ON passages
WHEN NEW.id IN (SELECT id FROM passages)
BEGIN
    INSERT INTO vector_changes (source, row_id, deleted)
    SELECT 'passages', id, 1 FROM passages WHERE id = NEW.id AND embedding IS NOT NULL;
    INSERT INTO passages_fts (passages_fts, rowid, context, text)
    SELECT 'delete', id, context, text FROM passages WHERE id = NEW.id;
END;

CREATE TRIGGER IF NOT EXISTS passages_insert AFTER INSERT ON passages
BEGIN
    INSERT INTO vector_changes (source, row_id, deleted)
    SELECT 'passages', NEW.id, 0 WHERE NEW.embedding IS NOT NULL;
    INSERT INTO passages_fts (rowid, context, text) VALUES (NEW.id, NEW.context, NEW.text);
END;

CREATE TRIGGER IF NOT EXISTS passages_vector_update AFTER UPDATE ON passages
WHEN NEW.embedding IS NOT OLD.embedding OR NEW.id <> OLD.id
BEGIN
    INSERT INTO vector_changes (source, row_id, deleted)
    SELECT 'passages', OLD.id, 1 WHERE NEW.id <> OLD.id;
    INSERT INTO vector_changes (source, row_id, deleted)
    VALUES ('passages', NEW.id, NEW.embedding IS NULL);
END;

CREATE TRIGGER IF NOT EXISTS passages_text_update AFTER UPDATE ON passages
WHEN NEW.context IS NOT OLD.context OR NEW.text IS NOT OLD.text OR NEW.id <> OLD.id
BEGIN
    INSERT INTO passages_fts (passages_fts, rowid, context, text)
    VALUES ('delete', OLD.id, OLD.context, OLD.text);
    INSERT INTO passages_fts (rowid, context, text) VALUES (NEW.id, NEW.context, NEW.text);
END;

CREATE TRIGGER IF NOT EXISTS passages_delete AFTER DELETE ON passages
BEGIN
    INSERT INTO vector_changes (source, row_id, deleted)
    SELECT 'passages', OLD.id, 1 WHERE OLD.embedding IS NOT NULL;
    INSERT INTO passages_fts (passages_fts, rowid, context, text)
    VALUES ('delete', OLD.id, OLD.context, OLD.text);
END;
