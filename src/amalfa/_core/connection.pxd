# The SQLite handle and its statements, as other Cython modules see them.
#
# fafcas.pyx scans embedding BLOBs straight from a Statement. It does not link SQLite itself:
# it calls the `row_*` functions below, which Cython exports from this module through its
# cross-module C API, so exactly one copy of SQLite lives in the process's amalfa modules.

from amalfa._core.sqlite3 cimport sqlite3, sqlite3_stmt, sqlite3_int64


cdef class Connection:
    cdef sqlite3 *db
    cdef readonly str path
    cdef readonly bint readonly
    cdef dict _cache            # sql -> Statement, insertion order = age (oldest first)
    cdef Py_ssize_t _cache_size
    cdef readonly Py_ssize_t cache_hits
    cdef readonly Py_ssize_t cache_misses
    cdef object _statements     # WeakSet of every live Statement, finalized on close
    cdef object __weakref__

    cdef int _check_open(self) except -1
    cdef int _raise_for(self, int rc) except -1
    cpdef Statement prepare(self, str sql)
    cdef Statement _new_statement(self, str sql, bint cached)


cdef class Statement:
    cdef sqlite3_stmt *stmt
    cdef readonly Connection connection
    cdef readonly str sql
    cdef int _nparams
    cdef int _ncols
    cdef list _held             # objects whose memory is bound with SQLITE_STATIC
    cdef bint _active           # stepped and not yet reset: rows are pending
    cdef bint _cached
    cdef bint _in_use           # a thread is inside SQLite with this statement (GIL released)
    cdef object __weakref__

    cdef int _check(self) except -1
    cdef void _finalize(self)
    cdef void _reset_quiet(self)
    cdef int _check_column(self, int i) except -1
    cdef int _bind_one(self, int index, object value) except -1
    cpdef bind(self, object params)
    cdef int _bind_all(self, object params) except -1
    cpdef bint step(self) except -1
    cpdef reset(self)
    cpdef tuple row(self)
    cdef object _column_value(self, int i)


# Row access for C-level scans (no Python objects, callable without the GIL). row_step captures
# a failure's code and message under the connection's mutex, before another thread can use it.
cdef int row_step(sqlite3_stmt *stmt, int *extended, char **message) noexcept nogil
# raises for a failure captured by row_step (frees the message)
cdef int raise_captured(int rc, int extended, char *message) except -1
cdef sqlite3_int64 row_int64(sqlite3_stmt *stmt, int column) noexcept nogil
cdef const void *row_blob(sqlite3_stmt *stmt, int column) noexcept nogil
cdef int row_bytes(sqlite3_stmt *stmt, int column) noexcept nogil
cdef int row_type(sqlite3_stmt *stmt, int column) noexcept nogil
