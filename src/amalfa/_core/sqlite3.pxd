# Declarations of the part of the SQLite C API that amalfa uses (https://sqlite.org/c3ref/).
# The header comes from the pinned amalgamation (vendor/sqlite); it is compiled into the
# `connection` module with hidden symbols, never taken from the system.

from libc.stdint cimport int64_t

cdef extern from "sqlite3.h" nogil:
    ctypedef struct sqlite3
    ctypedef struct sqlite3_stmt
    ctypedef struct sqlite3_backup
    ctypedef int64_t sqlite3_int64
    ctypedef void (*sqlite3_destructor_type)(void*)

    const char *sqlite3_libversion()
    const char *sqlite3_sourceid()
    int sqlite3_libversion_number()
    int sqlite3_threadsafe()
    void *sqlite3_db_mutex(sqlite3 *db)
    void sqlite3_mutex_enter(void *mutex)
    void sqlite3_mutex_leave(void *mutex)
    char *sqlite3_mprintf(const char *fmt, ...)
    const char *sqlite3_compileoption_get(int n)
    int sqlite3_config(int option, ...)
    sqlite3_int64 sqlite3_memory_used()
    sqlite3_int64 sqlite3_hard_heap_limit64(sqlite3_int64 n)

    int sqlite3_open_v2(const char *filename, sqlite3 **ppDb, int flags, const char *zVfs)
    int sqlite3_close_v2(sqlite3 *db)
    int sqlite3_extended_result_codes(sqlite3 *db, int onoff)
    int sqlite3_busy_timeout(sqlite3 *db, int ms)
    int sqlite3_exec(sqlite3 *db, const char *sql, void *callback, void *arg, char **errmsg)
    void sqlite3_free(void *p)
    void sqlite3_interrupt(sqlite3 *db)

    int sqlite3_errcode(sqlite3 *db)
    int sqlite3_extended_errcode(sqlite3 *db)
    const char *sqlite3_errmsg(sqlite3 *db)
    const char *sqlite3_errstr(int rc)

    sqlite3_int64 sqlite3_changes64(sqlite3 *db)
    sqlite3_int64 sqlite3_total_changes64(sqlite3 *db)
    sqlite3_int64 sqlite3_last_insert_rowid(sqlite3 *db)
    int sqlite3_get_autocommit(sqlite3 *db)
    int sqlite3_txn_state(sqlite3 *db, const char *zSchema)
    sqlite3 *sqlite3_db_handle(sqlite3_stmt *stmt)
    int sqlite3_db_readonly(sqlite3 *db, const char *zDbName)
    const char *sqlite3_db_filename(sqlite3 *db, const char *zDbName)

    int sqlite3_prepare_v3(sqlite3 *db, const char *zSql, int nByte, unsigned int prepFlags,
                           sqlite3_stmt **ppStmt, const char **pzTail)
    int sqlite3_step(sqlite3_stmt *stmt)
    int sqlite3_reset(sqlite3_stmt *stmt)
    int sqlite3_finalize(sqlite3_stmt *stmt)
    int sqlite3_clear_bindings(sqlite3_stmt *stmt)
    int sqlite3_stmt_readonly(sqlite3_stmt *stmt)
    int sqlite3_stmt_busy(sqlite3_stmt *stmt)
    const char *sqlite3_sql(sqlite3_stmt *stmt)

    int sqlite3_bind_parameter_count(sqlite3_stmt *stmt)
    int sqlite3_bind_parameter_index(sqlite3_stmt *stmt, const char *zName)
    const char *sqlite3_bind_parameter_name(sqlite3_stmt *stmt, int i)
    int sqlite3_bind_null(sqlite3_stmt *stmt, int i)
    int sqlite3_bind_int64(sqlite3_stmt *stmt, int i, sqlite3_int64 value)
    int sqlite3_bind_double(sqlite3_stmt *stmt, int i, double value)
    int sqlite3_bind_text64(sqlite3_stmt *stmt, int i, const char *value, unsigned long long n,
                            sqlite3_destructor_type destructor, unsigned char encoding)
    int sqlite3_bind_blob64(sqlite3_stmt *stmt, int i, const void *value, unsigned long long n,
                            sqlite3_destructor_type destructor)
    int sqlite3_bind_zeroblob(sqlite3_stmt *stmt, int i, int n)

    int sqlite3_column_count(sqlite3_stmt *stmt)
    int sqlite3_data_count(sqlite3_stmt *stmt)
    const char *sqlite3_column_name(sqlite3_stmt *stmt, int i)
    int sqlite3_column_type(sqlite3_stmt *stmt, int i)
    sqlite3_int64 sqlite3_column_int64(sqlite3_stmt *stmt, int i)
    double sqlite3_column_double(sqlite3_stmt *stmt, int i)
    const unsigned char *sqlite3_column_text(sqlite3_stmt *stmt, int i)
    const void *sqlite3_column_blob(sqlite3_stmt *stmt, int i)
    int sqlite3_column_bytes(sqlite3_stmt *stmt, int i)

    sqlite3_backup *sqlite3_backup_init(sqlite3 *pDest, const char *zDestName,
                                        sqlite3 *pSource, const char *zSourceName)
    int sqlite3_backup_step(sqlite3_backup *p, int nPage)
    int sqlite3_backup_finish(sqlite3_backup *p)

    int sqlite3_wal_checkpoint_v2(sqlite3 *db, const char *zDb, int eMode, int *pnLog, int *pnCkpt)

    sqlite3_destructor_type SQLITE_STATIC
    sqlite3_destructor_type SQLITE_TRANSIENT

    enum:
        SQLITE_OK
        SQLITE_ERROR
        SQLITE_BUSY
        SQLITE_LOCKED
        SQLITE_NOMEM
        SQLITE_READONLY
        SQLITE_MISUSE
        SQLITE_RANGE
        SQLITE_ROW
        SQLITE_DONE

        SQLITE_OPEN_READONLY
        SQLITE_OPEN_READWRITE
        SQLITE_OPEN_CREATE
        SQLITE_OPEN_URI
        SQLITE_OPEN_NOMUTEX
        SQLITE_OPEN_FULLMUTEX
        SQLITE_OPEN_EXRESCODE

        SQLITE_PREPARE_PERSISTENT

        SQLITE_INTEGER
        SQLITE_FLOAT
        SQLITE_TEXT
        SQLITE_BLOB
        SQLITE_NULL

        SQLITE_UTF8

        SQLITE_CHECKPOINT_PASSIVE
        SQLITE_CHECKPOINT_FULL
        SQLITE_CHECKPOINT_RESTART
        SQLITE_CHECKPOINT_TRUNCATE

        SQLITE_ABORT

        SQLITE_CONFIG_MEMSTATUS
