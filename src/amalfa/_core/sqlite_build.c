/*
 * The translation unit that compiles the pinned SQLite amalgamation, plus the one addition that
 * needs SQLite's internal structures: a fair busy handler.
 *
 * SQLite's default busy handler retries after 1, 2, 5, 10 ... ms and then every 100 ms. A writer
 * that has waited a while therefore polls ten times a second while newcomers poll every
 * millisecond, and under back-to-back writers from several processes it can starve for seconds
 * (measured here: 2.7-3.3 s of a 5 s budget). amalfa's handler polls every 1-3 ms (with jitter,
 * so waiters do not wake in lockstep) until the same timeout, measured on the monotonic clock.
 */
#include "sqlite3.c"

#include <time.h>

#include "amalfa_sqlite.h"

static _Thread_local struct timespec amalfa_wait_started;
static _Thread_local unsigned int amalfa_jitter_state;

static double amalfa_elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - since->tv_sec) * 1e3 + (double)(now.tv_nsec - since->tv_nsec) / 1e6;
}

static int amalfa_busy_callback(void *arg, int count)
{
    sqlite3 *db = (sqlite3 *)arg;
    if (count == 0) {
        clock_gettime(CLOCK_MONOTONIC, &amalfa_wait_started);
        amalfa_jitter_state ^= (unsigned int)amalfa_wait_started.tv_nsec | 1u;
    }
    if (amalfa_elapsed_ms(&amalfa_wait_started) >= (double)db->busyTimeout) {
        return 0; /* give up: SQLITE_BUSY reaches the caller */
    }
    /* xorshift jitter: sleep 1000-2999 microseconds */
    amalfa_jitter_state ^= amalfa_jitter_state << 13;
    amalfa_jitter_state ^= amalfa_jitter_state >> 17;
    amalfa_jitter_state ^= amalfa_jitter_state << 5;
    sqlite3OsSleep(db->pVfs, 1000 + (int)(amalfa_jitter_state % 2000));
    return 1;
}

int amalfa_fair_busy_timeout(sqlite3 *db, int milliseconds)
{
    int rc;
    if (milliseconds <= 0) {
        return sqlite3_busy_timeout(db, milliseconds); /* clears any handler */
    }
    rc = sqlite3_busy_handler(db, amalfa_busy_callback, db);
    if (rc == SQLITE_OK) {
        /* sqlite3_busy_handler zeroes busyTimeout; keep it, so PRAGMA busy_timeout reads back */
        sqlite3_mutex_enter(db->mutex);
        db->busyTimeout = milliseconds;
        sqlite3_mutex_leave(db->mutex);
    }
    return rc;
}

/* Errors read under the connection's mutex (see amalfa_sqlite.h). With SQLITE_OPEN_FULLMUTEX the
 * mutex is recursive, so the API calls made while holding it take it again without deadlock. */
static void amalfa_capture(sqlite3 *db, int rc, int *extended, char **message)
{
    int code = sqlite3_extended_errcode(db);
    *extended = ((code & 0xff) == (rc & 0xff)) ? code : rc;
    *message = sqlite3_mprintf("%s", sqlite3_errmsg(db));
}

int amalfa_step(sqlite3_stmt *stmt, int *extended, char **message)
{
    sqlite3 *db = sqlite3_db_handle(stmt);
    int rc;
    *message = NULL;
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        amalfa_capture(db, rc, extended, message);
    }
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return rc;
}

int amalfa_prepare(sqlite3 *db, const char *sql, int nbytes, unsigned int flags,
                   sqlite3_stmt **stmt, const char **tail, int *extended, char **message)
{
    int rc;
    *message = NULL;
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    rc = sqlite3_prepare_v3(db, sql, nbytes, flags, stmt, tail);
    if (rc != SQLITE_OK) {
        amalfa_capture(db, rc, extended, message);
    }
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return rc;
}

int amalfa_exec(sqlite3 *db, const char *sql, int *extended, char **message)
{
    int rc;
    char *errmsg = NULL;
    *message = NULL;
    sqlite3_mutex_enter(sqlite3_db_mutex(db));
    rc = sqlite3_exec(db, sql, NULL, NULL, &errmsg);
    if (rc != SQLITE_OK) {
        amalfa_capture(db, rc, extended, message);
        if (errmsg != NULL) { /* exec's own message names the failing statement best */
            sqlite3_free(*message);
            *message = errmsg;
        }
    } else {
        sqlite3_free(errmsg);
    }
    sqlite3_mutex_leave(sqlite3_db_mutex(db));
    return rc;
}
