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
