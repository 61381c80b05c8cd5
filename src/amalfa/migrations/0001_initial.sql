-- The graph tables, as the original system's first step (drizzle 0000_happy_thaddeus_ross) made
-- them: nodes without `summary` (added by 0003), edges keyed by (source, target, type) with an
-- index on each end, and the ember_state bookkeeping of the sidecar analyser.
-- IF NOT EXISTS: an older database that has some of these tables keeps them and their rows.

CREATE TABLE IF NOT EXISTS edges (
    source text NOT NULL,
    target text NOT NULL,
    type text NOT NULL,
    confidence real DEFAULT 1,
    veracity real DEFAULT 1,
    context_source text,
    PRIMARY KEY (source, target, type)
);

CREATE INDEX IF NOT EXISTS idx_edges_source ON edges (source);
CREATE INDEX IF NOT EXISTS idx_edges_target ON edges (target);

CREATE TABLE IF NOT EXISTS ember_state (
    file_path text PRIMARY KEY NOT NULL,
    last_analyzed text,
    sidecar_created integer,
    confidence real
);

CREATE TABLE IF NOT EXISTS nodes (
    id text PRIMARY KEY NOT NULL,
    type text,
    title text,
    domain text,
    layer text,
    embedding blob,
    hash text,
    meta text,
    date text
);
