/* Additions to the SQLite C API compiled in src/amalfa/_core/sqlite_build.c. */
#ifndef AMALFA_SQLITE_H
#define AMALFA_SQLITE_H

#include "sqlite3.h"

/* Like sqlite3_busy_timeout, but waits with amalfa's fair handler (1-3 ms polls with jitter);
 * PRAGMA busy_timeout still reads back `milliseconds`. */
int amalfa_fair_busy_timeout(sqlite3 *db, int milliseconds);

/* sqlite3_step, sqlite3_prepare_v3 and sqlite3_exec with the connection's mutex held across the
 * call and the reading of its error: on failure *extended and *message (from sqlite3_mprintf;
 * free it with sqlite3_free) are the call's own, not another thread's that used the connection
 * after it. On success *message is left NULL. */
int amalfa_step(sqlite3_stmt *stmt, int *extended, char **message);
int amalfa_prepare(sqlite3 *db, const char *sql, int nbytes, unsigned int flags,
                   sqlite3_stmt **stmt, const char **tail, int *extended, char **message);
int amalfa_exec(sqlite3 *db, const char *sql, int *extended, char **message);

#endif
