"""The SQLite handle, its prepared statements and their cache.

A thin, exact binding in the manner of apsw: every SQLite result code becomes an exception from
amalfa.errors carrying the code and SQLite's message; sqlite3_step runs without the GIL; buffers
(bytes, str, numpy arrays, memoryviews) are bound without copying and kept alive by the statement
until it is rebound, reset with new bindings or finalized.

Why one module of ~800 lines: Connection, Statement and the statement cache are one concept (a
connection and what it prepares). Statement reaches into its Connection's handle, lock and
pending-error state at C level on every step; split across modules those accesses would go
through cross-module ``.pxd`` declarations and the GIL/lock discipline would no longer read top
down in one file.
"""

import weakref

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_C_CONTIGUOUS
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.string cimport strlen

from amalfa._core.sqlite3 cimport *

# amalfa.errors is a leaf module (it imports nothing from the package); the hierarchy is defined
# there, in Python, so that it reads in one place.
from amalfa import errors as _errors

cdef extern from "amalfa_sqlite.h" nogil:
    int amalfa_fair_busy_timeout(sqlite3 *db, int milliseconds)
    int amalfa_step(sqlite3_stmt *stmt, int *extended, char **message)
    int amalfa_prepare(sqlite3 *db, const char *sql, int nbytes, unsigned int flags,
                       sqlite3_stmt **stmt, const char **tail, int *extended, char **message)
    int amalfa_exec(sqlite3 *db, const char *sql, int *extended, char **message)

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t *size) except NULL
    bint PyIndex_Check(object o)

DEFAULT_CACHE_SIZE = 128


def sqlite_version():
    """The version of the SQLite library compiled into amalfa (not the system's)."""
    return sqlite3_libversion().decode("ascii")


def sqlite_source_id():
    return sqlite3_sourceid().decode("ascii")


def compile_options():
    """The compile-time options of the embedded SQLite, as sqlite3_compileoption_get lists them."""
    cdef int i = 0
    cdef const char *opt
    out = []
    while True:
        opt = sqlite3_compileoption_get(i)
        if opt == NULL:
            return out
        out.append(opt.decode("ascii"))
        i += 1


# -- SQLite's allocator: statistics and the hard heap limit (as apsw exposes them) ---------------


def enable_memory_statistics():
    """Turn on SQLite's allocation counters (``SQLITE_CONFIG_MEMSTATUS``), which
    :func:`memory_used` and :func:`hard_heap_limit` need.

    amalfa builds SQLite with them off (``SQLITE_DEFAULT_MEMSTATUS=0``: counting takes a global
    mutex on every allocation). SQLite accepts the change only before it initialises, that is
    before this process opens its first connection; later it raises RuntimeError.
    """
    if sqlite3_config(SQLITE_CONFIG_MEMSTATUS, <int>1) != SQLITE_OK:
        raise RuntimeError("SQLite's memory statistics can only be turned on before the first "
                           "connection of this process opens")


def memory_used():
    """Bytes SQLite has allocated and not freed (0 unless memory statistics are on)."""
    return sqlite3_memory_used()


def hard_heap_limit(limit=-1):
    """Set SQLite's hard heap limit in bytes (0 removes it) and return the previous limit; with
    no argument only read it. Past the limit every SQLite allocation fails (SQLITE_NOMEM, raised
    as :class:`amalfa.errors.NoMemError`); enforced only while memory statistics are on."""
    cdef sqlite3_int64 n = limit
    if n < -1:
        raise ValueError(f"limit must be >= 0 (or -1 to read it), not {limit}")
    return sqlite3_hard_heap_limit64(n)


cdef int raise_captured(int rc, int extended, char *message) except -1:
    """Raise for a failure whose code and message were captured under the connection's mutex
    (amalfa_step/prepare/exec); frees the message."""
    cdef str text
    if message == NULL:
        extended = rc
        text = _decode(sqlite3_errstr(rc))
    else:
        try:
            text = _decode(message)
        finally:
            sqlite3_free(message)
    raise _errors.exception_for(extended, text)


cdef str _decode(const char *text):
    if text == NULL:
        return ""
    return PyUnicode_DecodeUTF8(text, strlen(text), "replace")


cdef inline bint _is_blank_tail(const char *tail):
    # what prepare leaves after the first statement: only white space and semicolons may follow
    # in execute(); comments make SQLite prepare an empty statement, handled by the caller.
    while tail[0] != 0:
        if tail[0] not in b" \t\r\n;":
            return False
        tail += 1
    return True


cdef class _BufferHold:
    """Keeps an exported buffer (a numpy array, memoryview...) alive while SQLite reads it."""
    cdef Py_buffer view
    cdef bint acquired

    def __dealloc__(self):
        if self.acquired:
            PyBuffer_Release(&self.view)


cdef class Connection:
    """An SQLite database connection.

    ``Connection(path, readonly=False, create=True)``. Most callers want
    :meth:`amalfa.DatabaseFactory.connect`, which applies the canonical pragmas.
    """

    def __cinit__(self):
        self.db = NULL
        self._cache = {}
        self._cache_size = DEFAULT_CACHE_SIZE
        self._statements = weakref.WeakSet()

    def __init__(self, path, *, bint readonly=False, bint create=True, bint uri=False,
                 Py_ssize_t cache_size=DEFAULT_CACHE_SIZE):
        cdef int flags = SQLITE_OPEN_EXRESCODE | SQLITE_OPEN_FULLMUTEX
        cdef int rc
        cdef bytes encoded
        cdef const char *cpath
        if self.db != NULL:
            raise _errors.MisuseError("Connection.__init__ called twice")
        self.path = str(path)
        encoded = self.path.encode("utf-8")
        cpath = encoded
        if readonly:
            flags |= SQLITE_OPEN_READONLY
        else:
            flags |= SQLITE_OPEN_READWRITE
            if create:
                flags |= SQLITE_OPEN_CREATE
        if uri:
            flags |= SQLITE_OPEN_URI
        with nogil:
            rc = sqlite3_open_v2(cpath, &self.db, flags, NULL)
        if rc != SQLITE_OK:
            message = _decode(sqlite3_errmsg(self.db)) if self.db != NULL else _decode(sqlite3_errstr(rc))
            code = sqlite3_extended_errcode(self.db) if self.db != NULL else rc
            sqlite3_close_v2(self.db)
            self.db = NULL
            raise _errors.exception_for(code, f"{message}: {self.path}")
        sqlite3_extended_result_codes(self.db, 1)
        self.readonly = readonly or sqlite3_db_readonly(self.db, "main") == 1
        self._cache_size = max(0, cache_size)

    def __dealloc__(self):
        if self.db != NULL:
            # close_v2 turns the handle into a zombie until the statements still alive are
            # finalized by their own __dealloc__.
            sqlite3_close_v2(self.db)
            self.db = NULL

    cdef int _check_open(self) except -1:
        if self.db == NULL:
            raise _errors.ConnectionClosedError(f"the connection to {self.path} is closed")
        return 0

    cdef int _raise_for(self, int rc) except -1:
        cdef int extended = sqlite3_extended_errcode(self.db)
        if (extended & 0xff) != (rc & 0xff):
            extended = rc
        raise _errors.exception_for(extended, _decode(sqlite3_errmsg(self.db)))

    # -- statements --------------------------------------------------------------------------

    cpdef Statement prepare(self, str sql):
        """Return the cached prepared statement for ``sql`` (prepared on first use).

        The cache holds the newest ``cache_size`` statements and evicts the oldest. A cached
        statement that is mid-iteration (stepped, not reset) is not handed out twice: the caller
        gets a private statement instead.
        """
        self._check_open()
        cdef Statement stmt = self._cache.pop(sql, None)
        if stmt is not None:
            self._cache[sql] = stmt  # now the newest
            if stmt.stmt != NULL and not stmt._active and not stmt._in_use:
                self.cache_hits += 1
                return stmt
            return self._new_statement(sql, False)
        self.cache_misses += 1
        stmt = self._new_statement(sql, self._cache_size > 0)
        if self._cache_size > 0:
            self._cache[sql] = stmt
            if len(self._cache) > self._cache_size:
                # evicted statements stay usable by whoever holds them; they are finalized
                # when dropped or when the connection closes
                del self._cache[next(iter(self._cache))]
        return stmt

    def prepare_uncached(self, str sql):
        """A private statement, never shared through the cache."""
        self._check_open()
        return self._new_statement(sql, False)

    cdef Statement _new_statement(self, str sql, bint cached):
        cdef Statement stmt = Statement.__new__(Statement)
        cdef Py_ssize_t size
        cdef const char *text = PyUnicode_AsUTF8AndSize(sql, &size)
        cdef const char *tail = NULL
        cdef sqlite3_stmt *raw = NULL
        cdef unsigned int prep_flags = SQLITE_PREPARE_PERSISTENT if cached else 0
        cdef int rc, extended = 0
        cdef char *message = NULL
        with nogil:
            rc = amalfa_prepare(self.db, text, <int>size, prep_flags, &raw, &tail, &extended,
                                &message)
        if rc != SQLITE_OK:
            sqlite3_finalize(raw)
            raise_captured(rc, extended, message)
        if raw == NULL:
            raise _errors.MisuseError(f"no SQL statement in {sql!r}")
        if tail != NULL and not _is_blank_tail(tail):
            sqlite3_finalize(raw)
            raise _errors.MisuseError(
                "prepare()/execute() take one SQL statement; use executescript() for several: "
                f"{sql!r}")
        stmt.stmt = raw
        stmt.connection = self
        stmt.sql = sql
        stmt._nparams = sqlite3_bind_parameter_count(raw)
        stmt._ncols = sqlite3_column_count(raw)
        stmt._held = []
        stmt._cached = cached
        self._statements.add(stmt)
        return stmt

    def execute(self, str sql, params=()):
        """Run one statement and return all its rows as a list of tuples."""
        return self.prepare(sql).execute(params)

    def executemany(self, str sql, seq_of_params):
        """Run one statement once per parameter set; returns the total number of changes."""
        return self.prepare(sql).executemany(seq_of_params)

    def executescript(self, str sql):
        """Run any number of semicolon-separated statements (no parameters, no rows)."""
        self._check_open()
        cdef bytes encoded = sql.encode("utf-8")
        cdef const char *text = encoded
        cdef char *message = NULL
        cdef int rc, extended = 0
        with nogil:
            rc = amalfa_exec(self.db, text, &extended, &message)
        if rc != SQLITE_OK:
            raise_captured(rc, extended, message)

    # -- state ----------------------------------------------------------------------------------

    @property
    def closed(self):
        return self.db == NULL

    @property
    def changes(self):
        """Rows changed by the most recent INSERT, UPDATE or DELETE."""
        self._check_open()
        return sqlite3_changes64(self.db)

    @property
    def total_changes(self):
        """Rows changed by this connection since it opened."""
        self._check_open()
        return sqlite3_total_changes64(self.db)

    @property
    def last_insert_rowid(self):
        self._check_open()
        return sqlite3_last_insert_rowid(self.db)

    @property
    def in_transaction(self):
        self._check_open()
        return sqlite3_get_autocommit(self.db) == 0

    @property
    def txn_state(self):
        """The main database's transaction state: 0 none, 1 reading, 2 writing
        (sqlite3_txn_state). A deferred ``BEGIN`` is 0 until its first read."""
        self._check_open()
        return sqlite3_txn_state(self.db, "main")

    @property
    def filename(self):
        """The absolute path SQLite resolved for the main database ("" for :memory:)."""
        self._check_open()
        return _decode(sqlite3_db_filename(self.db, "main"))

    @property
    def cache_size(self):
        return self._cache_size

    def set_busy_timeout(self, int milliseconds):
        """Wait up to ``milliseconds`` for a lock, polling every 1-3 ms with jitter.

        Unlike ``PRAGMA busy_timeout`` (SQLite's handler, which backs off to 100 ms polls), a
        long waiter is not starved by writers that keep arriving. The pragma reads back the value.
        """
        self._check_open()
        cdef int rc = amalfa_fair_busy_timeout(self.db, milliseconds)
        if rc != SQLITE_OK:
            self._raise_for(rc)

    def interrupt(self):
        """Make the running statement (in another thread) stop with InterruptError."""
        if self.db != NULL:
            sqlite3_interrupt(self.db)

    def checkpoint(self, str mode="TRUNCATE"):
        """Run a WAL checkpoint; returns (frames in the log, frames checkpointed)."""
        self._check_open()
        modes = {"PASSIVE": SQLITE_CHECKPOINT_PASSIVE, "FULL": SQLITE_CHECKPOINT_FULL,
                 "RESTART": SQLITE_CHECKPOINT_RESTART, "TRUNCATE": SQLITE_CHECKPOINT_TRUNCATE}
        if mode.upper() not in modes:
            raise ValueError(f"checkpoint mode must be one of {sorted(modes)}, not {mode!r}")
        cdef int emode = modes[mode.upper()]
        cdef int nlog = 0, nckpt = 0, rc
        with nogil:
            rc = sqlite3_wal_checkpoint_v2(self.db, NULL, emode, &nlog, &nckpt)
        if rc != SQLITE_OK:
            self._raise_for(rc)
        return nlog, nckpt

    def backup_to(self, target):
        """Copy the whole database into ``target`` (a path) with SQLite's online backup API.

        Readers and writers of this database may go on meanwhile; the copy is consistent.
        """
        self._check_open()
        cdef Connection dest = Connection(target, create=True)
        cdef sqlite3_backup *backup
        cdef int rc, finished
        try:
            backup = sqlite3_backup_init(dest.db, "main", self.db, "main")
            if backup == NULL:
                dest._raise_for(sqlite3_errcode(dest.db))
            with nogil:
                rc = sqlite3_backup_step(backup, -1)
                # finish releases the locks and reports the step's error on the destination;
                # its own failure (after a step that said DONE) means the copy is not whole
                finished = sqlite3_backup_finish(backup)
            if rc != SQLITE_DONE or finished != SQLITE_OK:
                code = rc if rc != SQLITE_DONE else finished
                raise _errors.exception_for(code, f"backup to {target} failed: "
                                       + _decode(sqlite3_errstr(code)))
        finally:
            dest.close()

    def close(self):
        """Finalize every statement and close the handle. Closing twice is harmless."""
        if self.db == NULL:
            return
        for stmt in list(self._statements):
            if (<Statement>stmt)._in_use:
                raise _errors.MisuseError(
                    "cannot close the connection while another thread is using one of its statements")
        for stmt in list(self._statements):
            (<Statement>stmt)._finalize()
        self._cache.clear()
        cdef int rc = sqlite3_close_v2(self.db)
        self.db = NULL
        if rc != SQLITE_OK:
            raise _errors.exception_for(rc, _decode(sqlite3_errstr(rc)))

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self.db == NULL else ("readonly" if self.readonly else "open")
        return f"<amalfa._core.Connection {self.path!r} {state}>"


cdef class Statement:
    """A prepared statement. Bind, step, read columns, reset; or use execute/first/run."""

    def __cinit__(self):
        self.stmt = NULL
        self._active = False
        self._in_use = False

    def __init__(self, *args, **kwargs):
        raise TypeError("statements come from Connection.prepare()")

    def __dealloc__(self):
        if self.stmt != NULL:
            sqlite3_finalize(self.stmt)
            self.stmt = NULL

    cdef int _check(self) except -1:
        if self.stmt == NULL:
            if self.connection is not None and self.connection.db == NULL:
                raise _errors.ConnectionClosedError(
                    f"the connection to {self.connection.path} is closed")
            raise _errors.StatementFinalizedError(f"statement is finalized: {self.sql!r}")
        if self._in_use:
            raise _errors.MisuseError("the statement is in use by another thread")
        return 0

    cdef void _finalize(self):
        if self.stmt != NULL:
            sqlite3_finalize(self.stmt)
            self.stmt = NULL
        self._held = []
        self._active = False

    # -- binding --------------------------------------------------------------------------------

    @property
    def parameter_count(self):
        return self._nparams

    @property
    def parameter_names(self):
        """Names of the parameters in order (None for positional ones)."""
        names = []
        cdef const char *name
        for i in range(1, self._nparams + 1):
            name = sqlite3_bind_parameter_name(self.stmt, i)
            names.append(None if name == NULL else name.decode("utf-8"))
        return names

    cdef int _bind_one(self, int index, object value) except -1:
        cdef int rc
        cdef Py_ssize_t size
        cdef const char *text
        cdef _BufferHold hold
        if value is None:
            rc = sqlite3_bind_null(self.stmt, index)
        elif isinstance(value, int):  # bool included
            try:
                rc = sqlite3_bind_int64(self.stmt, index, value)
            except OverflowError:
                raise OverflowError(f"parameter {index}: integer {value} does not fit in 64 bits") from None
        elif isinstance(value, float):
            rc = sqlite3_bind_double(self.stmt, index, value)
        elif isinstance(value, str):
            text = PyUnicode_AsUTF8AndSize(value, &size)
            self._held.append(value)
            rc = sqlite3_bind_text64(self.stmt, index, text, size, SQLITE_STATIC, SQLITE_UTF8)
        elif isinstance(value, bytes):
            self._held.append(value)
            rc = sqlite3_bind_blob64(self.stmt, index, PyBytes_AS_STRING(value),
                                     PyBytes_GET_SIZE(value), SQLITE_STATIC)
        else:
            hold = _BufferHold()
            try:
                PyObject_GetBuffer(value, &hold.view, PyBUF_C_CONTIGUOUS)
            except (BufferError, ValueError) as exc:
                raise ValueError(
                    f"parameter {index}: cannot bind {type(value).__name__} without a copy "
                    f"(buffers must be C-contiguous: {exc})") from None
            except TypeError:
                # no buffer: int-likes and float-likes bind by value
                if PyIndex_Check(value):
                    return self._bind_one(index, value.__index__())
                if hasattr(value, "__float__"):
                    return self._bind_one(index, float(value))
                raise TypeError(
                    f"parameter {index}: cannot bind {type(value).__name__} "
                    "(need None, int, float, str, bytes or a buffer)") from None
            hold.acquired = True
            if hold.view.ndim == 0:
                # numpy scalars export a 0-d buffer: bind their value, not their bytes
                if PyIndex_Check(value):
                    return self._bind_one(index, value.__index__())
                return self._bind_one(index, float(value))
            self._held.append(hold)
            rc = sqlite3_bind_blob64(self.stmt, index, hold.view.buf, hold.view.len, SQLITE_STATIC)
        if rc != SQLITE_OK:
            self.connection._raise_for(rc)
        return 0

    cpdef bind(self, object params):
        """Bind a sequence (by position) or a mapping (by name, without the ':' / '@' / '$').

        The buffers held for the previous bindings are released only once every parameter is
        rebound; if one fails, all parameters are cleared to NULL first, so no binding ever
        points at released memory."""
        cdef list previous
        self._check()
        if self._active:
            self._reset_quiet()
        previous = self._held
        self._held = []
        try:
            self._bind_all(params)
        except BaseException:
            sqlite3_clear_bindings(self.stmt)
            self._held = []
            raise
        finally:
            del previous

    cdef int _bind_all(self, object params) except -1:
        cdef int i
        cdef const char *name
        if isinstance(params, dict) or (hasattr(params, "keys") and not isinstance(params, (str, bytes))):
            for i in range(1, self._nparams + 1):
                name = sqlite3_bind_parameter_name(self.stmt, i)
                if name == NULL or name[0] == b'?':
                    raise _errors.RangeError(
                        f"parameter {i} is positional; bind a sequence, not a mapping: {self.sql!r}")
                key = name[1:].decode("utf-8")
                try:
                    value = params[key]
                except KeyError:
                    raise _errors.RangeError(f"missing named parameter {key!r} for {self.sql!r}") from None
                self._bind_one(i, value)
            return 0
        if isinstance(params, (str, bytes)):
            raise TypeError("parameters must be a sequence or a mapping, not a single str/bytes")
        if not isinstance(params, (tuple, list)):
            params = tuple(params)
        if len(params) != self._nparams:
            raise _errors.RangeError(
                f"statement takes {self._nparams} parameter(s), {len(params)} given: {self.sql!r}")
        for i in range(self._nparams):
            self._bind_one(i + 1, params[i])
        return 0

    def clear_bindings(self):
        self._check()
        self._reset_quiet()
        sqlite3_clear_bindings(self.stmt)
        self._held = []

    # -- stepping -------------------------------------------------------------------------------

    cpdef bint step(self) except -1:
        """Advance to the next row: True when a row is ready, False when done."""
        cdef int rc, extended = 0
        cdef char *message = NULL
        self._check()
        self._in_use = True
        with nogil:
            rc = amalfa_step(self.stmt, &extended, &message)
        self._in_use = False
        if rc == SQLITE_ROW:
            self._active = True
            return True
        self._active = False
        if rc == SQLITE_DONE:
            return False
        sqlite3_reset(self.stmt)
        raise_captured(rc, extended, message)

    cdef void _reset_quiet(self):
        sqlite3_reset(self.stmt)
        self._active = False

    cpdef reset(self):
        """Rewind the statement so it can run again (bindings are kept)."""
        self._check()
        self._reset_quiet()

    def finalize(self):
        """Release the statement; using it afterwards raises StatementFinalizedError."""
        if self._in_use:
            raise _errors.MisuseError("the statement is in use by another thread")
        self._finalize()
        if self.connection is not None and self._cached:
            cached = self.connection._cache.get(self.sql)
            if cached is self:
                del self.connection._cache[self.sql]

    @property
    def finalized(self):
        return self.stmt == NULL

    @property
    def active(self):
        """True between a step() that returned a row and the next reset()."""
        return self._active

    @property
    def readonly(self):
        self._check()
        return sqlite3_stmt_readonly(self.stmt) != 0

    # -- columns --------------------------------------------------------------------------------

    @property
    def column_count(self):
        return self._ncols

    @property
    def columns(self):
        self._check()
        return [_decode(sqlite3_column_name(self.stmt, i)) for i in range(self._ncols)]

    cdef int _check_column(self, int i) except -1:
        self._check()
        if not self._active:
            raise _errors.MisuseError("no row: call step() first (and check it returned True)")
        if i < 0 or i >= self._ncols:
            raise IndexError(f"column {i} out of range (statement has {self._ncols})")
        return 0

    cdef object _column_value(self, int i):
        cdef int kind = sqlite3_column_type(self.stmt, i)
        cdef const char *data
        cdef int n
        if kind == SQLITE_INTEGER:
            return sqlite3_column_int64(self.stmt, i)
        if kind == SQLITE_FLOAT:
            return sqlite3_column_double(self.stmt, i)
        if kind == SQLITE_TEXT:
            data = <const char *>sqlite3_column_text(self.stmt, i)
            n = sqlite3_column_bytes(self.stmt, i)
            # text from other clients may not be UTF-8: undecodable bytes become U+FFFD
            return PyUnicode_DecodeUTF8(data, n, "replace")
        if kind == SQLITE_BLOB:
            data = <const char *>sqlite3_column_blob(self.stmt, i)
            n = sqlite3_column_bytes(self.stmt, i)
            return PyBytes_FromStringAndSize(data, n)
        return None

    def column(self, int i):
        """The value of column ``i`` of the current row, typed as SQLite stores it."""
        self._check_column(i)
        return self._column_value(i)

    def column_type(self, int i):
        """SQLite's storage class of column ``i``: 1 int, 2 float, 3 text, 4 blob, 5 null."""
        self._check_column(i)
        return sqlite3_column_type(self.stmt, i)

    def column_int(self, int i):
        self._check_column(i)
        return sqlite3_column_int64(self.stmt, i)

    def column_double(self, int i):
        self._check_column(i)
        return sqlite3_column_double(self.stmt, i)

    def column_text(self, int i):
        self._check_column(i)
        cdef const char *data = <const char *>sqlite3_column_text(self.stmt, i)
        if data == NULL:
            return None
        return PyUnicode_DecodeUTF8(data, sqlite3_column_bytes(self.stmt, i), "replace")

    def column_blob(self, int i):
        self._check_column(i)
        if sqlite3_column_type(self.stmt, i) == SQLITE_NULL:
            return None
        cdef const char *data = <const char *>sqlite3_column_blob(self.stmt, i)
        return PyBytes_FromStringAndSize(data, sqlite3_column_bytes(self.stmt, i))

    cpdef tuple row(self):
        """The current row as a tuple."""
        cdef int i
        self._check_column(0) if self._ncols else self._check()
        out = PyTuple_New(self._ncols)
        for i in range(self._ncols):
            value = self._column_value(i)
            Py_INCREF(value)
            PyTuple_SET_ITEM(out, i, value)
        return out

    # -- one-call forms -------------------------------------------------------------------------

    def execute(self, params=()):
        """Bind, run to completion and return every row (a list of tuples); then reset."""
        cdef list rows = []
        if self._nparams or params:
            self.bind(params)
        else:
            self._check()
            self._reset_quiet()
        try:
            while self.step():
                rows.append(self.row())
        finally:
            if self.stmt != NULL:
                self._reset_quiet()
        return rows

    def first(self, params=()):
        """Bind, step once and return the first row (or None); then reset."""
        if self._nparams or params:
            self.bind(params)
        else:
            self._check()
            self._reset_quiet()
        try:
            if self.step():
                return self.row()
            return None
        finally:
            if self.stmt != NULL:
                self._reset_quiet()

    def run(self, params=()):
        """Bind, run to completion ignoring rows; returns the connection's change count."""
        if self._nparams or params:
            self.bind(params)
        else:
            self._check()
            self._reset_quiet()
        try:
            while self.step():
                pass
        finally:
            if self.stmt != NULL:
                self._reset_quiet()
        return sqlite3_changes64(self.connection.db)

    def executemany(self, seq_of_params):
        """Run once per parameter set; returns the total number of changed rows."""
        cdef sqlite3_int64 total = 0
        for params in seq_of_params:
            self.bind(params)
            try:
                while self.step():
                    pass
            finally:
                if self.stmt != NULL:
                    self._reset_quiet()
            total += sqlite3_changes64(self.connection.db)
        return total

    def executemany_rows(self, heads, const unsigned char[:, ::1] blobs):
        """Run once per row i: ``heads[i]`` binds parameters 1..m-1 and row i of ``blobs`` (a
        C-contiguous byte view of an (n, w) array) binds parameter m as a BLOB of w bytes,
        without a copy. The loop runs here, not in Python; every binding is cleared before
        returning, so nothing points into ``blobs`` afterwards. Returns the total changes."""
        cdef Py_ssize_t n = blobs.shape[0], width = blobs.shape[1], i
        cdef int j, last = self._nparams, rc, extended = 0
        cdef char *message = NULL
        cdef sqlite3_int64 total = 0
        cdef const void *row
        cdef tuple head
        self._check()
        if last < 1:
            raise _errors.RangeError(f"statement takes no parameter for the BLOB: {self.sql!r}")
        if len(heads) != n:
            raise ValueError(f"{len(heads)} parameter rows for {n} BLOB rows")
        self._reset_quiet()
        try:
            for i in range(n):
                head = tuple(heads[i])
                if len(head) != last - 1:
                    raise _errors.RangeError(
                        f"row {i}: statement takes {last - 1} parameter(s) before the BLOB, "
                        f"{len(head)} given: {self.sql!r}")
                self._held = []  # `heads` keeps this row's values alive during the call
                for j in range(last - 1):
                    self._bind_one(j + 1, head[j])
                row = <const void *>&blobs[i, 0] if width else <const void *>""
                rc = sqlite3_bind_blob64(self.stmt, last, row, width, SQLITE_STATIC)
                if rc != SQLITE_OK:
                    self.connection._raise_for(rc)
                self._in_use = True
                with nogil:
                    rc = amalfa_step(self.stmt, &extended, &message)
                    sqlite3_reset(self.stmt)
                self._in_use = False
                if rc != SQLITE_DONE and rc != SQLITE_ROW:
                    raise_captured(rc, extended, message)
                total += sqlite3_changes64(self.connection.db)
        finally:
            self._in_use = False
            if self.stmt != NULL:
                sqlite3_clear_bindings(self.stmt)
                self._reset_quiet()
            self._held = []
        return total

    def __iter__(self):
        """Iterate the remaining rows of an already-bound statement, resetting at the end."""
        self._check()
        try:
            while self.step():
                yield self.row()
        finally:
            if self.stmt != NULL:
                self._reset_quiet()

    def __repr__(self):
        state = "finalized" if self.stmt == NULL else ("active" if self._active else "ready")
        return f"<amalfa._core.Statement {state} {self.sql!r}>"


# -- row access for C-level scans (declared in connection.pxd) ------------------------------------

cdef int row_step(sqlite3_stmt *stmt, int *extended, char **message) noexcept nogil:
    return amalfa_step(stmt, extended, message)

cdef sqlite3_int64 row_int64(sqlite3_stmt *stmt, int column) noexcept nogil:
    return sqlite3_column_int64(stmt, column)

cdef const void *row_blob(sqlite3_stmt *stmt, int column) noexcept nogil:
    return sqlite3_column_blob(stmt, column)

cdef int row_bytes(sqlite3_stmt *stmt, int column) noexcept nogil:
    return sqlite3_column_bytes(stmt, column)

cdef int row_type(sqlite3_stmt *stmt, int column) noexcept nogil:
    return sqlite3_column_type(stmt, column)

