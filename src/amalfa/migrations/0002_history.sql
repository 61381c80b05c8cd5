-- The audit trail, as the original system's second step (drizzle 0001_happy_serpent_society).
-- old_value and new_value hold JSON; node values never include the embedding.

CREATE TABLE IF NOT EXISTS history (
    id integer PRIMARY KEY AUTOINCREMENT NOT NULL,
    entity_type text NOT NULL,
    entity_id text NOT NULL,
    action text NOT NULL,
    old_value text,
    new_value text,
    timestamp text DEFAULT (CURRENT_TIMESTAMP)
);
