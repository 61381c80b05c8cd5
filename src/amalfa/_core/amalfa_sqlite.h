/* Additions to the SQLite C API compiled in src/amalfa/_core/sqlite_build.c. */
#ifndef AMALFA_SQLITE_H
#define AMALFA_SQLITE_H

#include "sqlite3.h"

/* Like sqlite3_busy_timeout, but waits with amalfa's fair handler (1-3 ms polls with jitter);
 * PRAGMA busy_timeout still reads back `milliseconds`. */
int amalfa_fair_busy_timeout(sqlite3 *db, int milliseconds);

#endif
