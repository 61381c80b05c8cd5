-- A node's extracted definition or description, as the original system's third step
-- (drizzle 0002_curly_fat_cobra). Appended last, so the column order matches the original's.

ALTER TABLE nodes ADD summary text;
