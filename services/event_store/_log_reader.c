/* A range of a SQLite store's log read and hashed, for the fast path of ``cbcm audit verify``
 * (issue #15, ADR 33); services/event_store/log_blobs.py uses it.
 *
 * Python's sqlite3 makes a tuple of Python objects per event (about 1.2 us), more than the
 * hashing; SQL functions putting the bytes together cost as much. This reads the rows with
 * SQLite's C API, through the same SQLite library as Python's sqlite3 module (linked to the
 * same shared libsqlite3; log_blobs.py checks that it is the same one, since two copies of
 * SQLite in one process do not see each other's locks), on a read-only connection of its own,
 * and hashes each event's link preimage with OpenSSL (the library hashlib uses) straight from
 * SQLite's values, while they are in the cache.
 *
 * ``read_range(path, events_table, chain_table, first, last, previous_position,
 * previous_link)`` returns ``(plain, digests, links)``. ``plain`` is true only when every
 * position ``first <= p <= last`` holds an event and a chain row and each row is as the
 * library writes it: originator_id a text of 32 lowercase hex digits, originator_version an
 * integer, topic a text in UTF-8, state a blob, previous_position an integer naming the row
 * before (the first names ``previous_position``), link a blob of 32 bytes. Then, per event in
 * position order, ``digests`` holds the SHA-256 of what its link hashes (``chain.link_hash``:
 * the stored link before it, the first ``previous_link``; its position, id and version as
 * big-endian integers; its topic's length in 4 bytes; its topic and state), and ``links``
 * its stored link. The caller compares the two. Anything else: ``plain`` false and both
 * empty (the caller reads the range the old way). The GIL is released while reading.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    unsigned char *data;
    size_t size, capacity;
} Buffer;

static int
append(Buffer *b, const void *bytes, size_t size)
{
    if (b->size + size > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 65536;
        while (capacity < b->size + size) capacity *= 2;
        unsigned char *grown = realloc(b->data, capacity);
        if (grown == NULL) return -1;
        b->data = grown;
        b->capacity = capacity;
    }
    if (size) memcpy(b->data + b->size, bytes, size);
    b->size += size;
    return 0;
}

static void
big_endian(unsigned char *out, uint64_t value, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        out[i] = (unsigned char)(value & 0xff);
        value >>= 8;
    }
}

static int
hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1; /* capitals too: the library writes lowercase */
}

/* Strict UTF-8 (RFC 3629, as Python's decoder: no overlong forms, no surrogates, nothing past
 * U+10FFFF): the application reads a topic as text, and cannot read it otherwise. */
static int
utf8(const unsigned char *s, int size)
{
    int i = 0;
    while (i < size) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int more;
        uint32_t code, least;
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1, code = c & 0x1f, least = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2, code = c & 0x0f, least = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3, code = c & 0x07, least = 0x10000;
        } else {
            return 0;
        }
        if (i + more >= size) return 0; /* cut short */
        for (int k = 1; k <= more; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            code = code << 6 | (s[i + k] & 0x3f);
        }
        if (code < least || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return 0;
        i += more + 1;
    }
    return 1;
}

static int
identifier(const char *name)
{
    if (name == NULL || !*name || strlen(name) > 128) return 0;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_'))
            return 0;
    return 1;
}

enum { PLAIN = 0, NOT_PLAIN = 1, FAILED = 2, NO_MEMORY = 3 };

typedef struct {
    Buffer digests, links;
    char error[256];
} Result;

static EVP_MD *sha256_md = NULL;

/* The reading itself, without the GIL: PLAIN, NOT_PLAIN, or FAILED / NO_MEMORY. */
static int
read_rows(sqlite3 *db, EVP_MD_CTX *ctx, const char *events, const char *chain, int64_t first,
          int64_t last, int64_t previous, const unsigned char *previous_link, Result *r)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT e.rowid, e.originator_id, e.originator_version, e.topic, e.state, "
             "c.previous_position, c.link, "
             "(SELECT count(*) FROM \"%s\" WHERE rowid >= ?1 AND rowid <= ?2), "
             "(SELECT count(*) FROM \"%s\" WHERE position >= ?1 AND position <= ?2) "
             "FROM \"%s\" e JOIN \"%s\" c ON c.position = e.rowid "
             "WHERE e.rowid >= ?1 AND e.rowid <= ?2 ORDER BY e.rowid",
             events, chain, events, chain);
    sqlite3_stmt *stmt = NULL;
    int outcome = PLAIN;
    int64_t expected = first, rows = 0;
    const unsigned char *before = previous_link; /* the link the next preimage starts with */
    unsigned char last_link[32];
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) goto failed;
    sqlite3_bind_int64(stmt, 1, first);
    sqlite3_bind_int64(stmt, 2, last);
    /* first >= 0 (checked by the caller): last - first cannot overflow, the count may not */
    uint64_t wanted = (uint64_t)(last - first) + 1;
    int step;
    while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (rows == 0 && ((uint64_t)sqlite3_column_int64(stmt, 7) != wanted ||
                          (uint64_t)sqlite3_column_int64(stmt, 8) != wanted)) {
            outcome = NOT_PLAIN; /* an event without a link or a link without an event */
            break;
        }
        int64_t position = sqlite3_column_int64(stmt, 0);
        if (position != expected || sqlite3_column_type(stmt, 1) != SQLITE_TEXT ||
            sqlite3_column_type(stmt, 2) != SQLITE_INTEGER ||
            sqlite3_column_type(stmt, 3) != SQLITE_TEXT ||
            sqlite3_column_type(stmt, 4) != SQLITE_BLOB ||
            sqlite3_column_type(stmt, 5) != SQLITE_INTEGER ||
            sqlite3_column_type(stmt, 6) != SQLITE_BLOB ||
            sqlite3_column_int64(stmt, 5) != previous) {
            outcome = NOT_PLAIN;
            break;
        }
        const unsigned char *id = sqlite3_column_text(stmt, 1);
        int id_size = sqlite3_column_bytes(stmt, 1);
        const unsigned char *link = sqlite3_column_blob(stmt, 6);
        int link_size = sqlite3_column_bytes(stmt, 6);
        if (id == NULL || id_size != 32 || link_size != 32) {
            outcome = NOT_PLAIN;
            break;
        }
        unsigned char header[36];
        big_endian(header, (uint64_t)position, 8);
        for (int i = 0; i < 16; i++) {
            int high = hex_digit(id[2 * i]), low = hex_digit(id[2 * i + 1]);
            if (high < 0 || low < 0) {
                outcome = NOT_PLAIN;
                break;
            }
            header[8 + i] = (unsigned char)(high << 4 | low);
        }
        if (outcome != PLAIN) break;
        big_endian(header + 24, (uint64_t)sqlite3_column_int64(stmt, 2), 8);
        const unsigned char *topic = sqlite3_column_text(stmt, 3);
        int topic_size = sqlite3_column_bytes(stmt, 3);
        const void *state = sqlite3_column_blob(stmt, 4);
        int state_size = sqlite3_column_bytes(stmt, 4);
        if ((topic == NULL && topic_size) || (state == NULL && state_size) || topic_size < 0) {
            outcome = FAILED; /* out of memory inside SQLite */
            break;
        }
        if (!utf8(topic, topic_size)) {
            outcome = NOT_PLAIN;
            break;
        }
        big_endian(header + 32, (uint64_t)topic_size, 4);
        unsigned char digest[32];
        unsigned int written = 0;
        if (EVP_DigestInit_ex(ctx, sha256_md, NULL) != 1 ||
            EVP_DigestUpdate(ctx, before, 32) != 1 || EVP_DigestUpdate(ctx, header, 36) != 1 ||
            (topic_size && EVP_DigestUpdate(ctx, topic, (size_t)topic_size) != 1) ||
            (state_size && EVP_DigestUpdate(ctx, state, (size_t)state_size) != 1) ||
            EVP_DigestFinal_ex(ctx, digest, &written) != 1 || written != 32) {
            snprintf(r->error, sizeof r->error, "OpenSSL's SHA-256 failed");
            sqlite3_finalize(stmt);
            return FAILED;
        }
        if (append(&r->digests, digest, 32) || append(&r->links, link, 32)) {
            outcome = NO_MEMORY;
            break;
        }
        memcpy(last_link, link, 32); /* SQLite's copy lasts only until the next step */
        before = last_link;
        previous = position;
        expected = position + 1;
        rows++;
    }
    if (outcome == PLAIN && step != SQLITE_ROW && step != SQLITE_DONE) goto failed;
    if (outcome == PLAIN && (uint64_t)rows != wanted) outcome = NOT_PLAIN;
    sqlite3_finalize(stmt);
    return outcome;
failed:
    snprintf(r->error, sizeof r->error, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(stmt);
    return FAILED;
}

static PyObject *
read_range(PyObject *Py_UNUSED(module), PyObject *args)
{
    const char *path, *events, *chain;
    long long first, last, previous;
    Py_buffer link;
    if (!PyArg_ParseTuple(args, "sssLLLy*:read_range", &path, &events, &chain, &first, &last,
                          &previous, &link))
        return NULL;
    if (link.len != 32) {
        PyBuffer_Release(&link);
        PyErr_SetString(PyExc_ValueError, "previous_link: 32 bytes");
        return NULL;
    }
    unsigned char previous_link[32];
    memcpy(previous_link, link.buf, 32);
    PyBuffer_Release(&link);
    if (!identifier(events) || !identifier(chain)) {
        PyErr_SetString(PyExc_ValueError, "table names: letters, digits and underscores");
        return NULL;
    }
    if (first < 0 || last < first) {
        PyErr_SetString(PyExc_ValueError,
                        "a range of positions from 0 up, ending where it starts or after");
        return NULL;
    }
    Result r;
    memset(&r, 0, sizeof r);
    int outcome = PLAIN;
    sqlite3 *db = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL) return PyErr_NoMemory();
    Py_BEGIN_ALLOW_THREADS
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(r.error, sizeof r.error, "%s", db ? sqlite3_errmsg(db) : "cannot open");
        outcome = FAILED;
    } else {
        sqlite3_busy_timeout(db, 5000);
        /* read the file's pages where they lie (no copy into a page cache of our own) */
        sqlite3_exec(db, "PRAGMA mmap_size = 2147418112", NULL, NULL, NULL);
        outcome = read_rows(db, ctx, events, chain, first, last, previous, previous_link, &r);
    }
    sqlite3_close(db);
    Py_END_ALLOW_THREADS
    EVP_MD_CTX_free(ctx);
    PyObject *result = NULL;
    if (outcome == FAILED) {
        PyErr_Format(PyExc_OSError, "reading the log: %s", r.error);
    } else if (outcome == NO_MEMORY) {
        PyErr_NoMemory();
    } else if (outcome == NOT_PLAIN) {
        result = Py_BuildValue("(Oy#y#)", Py_False, "", (Py_ssize_t)0, "", (Py_ssize_t)0);
    } else {
        result = Py_BuildValue("(Oy#y#)", Py_True, r.digests.data ? (char *)r.digests.data : "",
                               (Py_ssize_t)r.digests.size,
                               r.links.data ? (char *)r.links.data : "", (Py_ssize_t)r.links.size);
    }
    free(r.digests.data);
    free(r.links.data);
    return result;
}

static PyObject *
open_v2_address(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(args))
{
    return PyLong_FromVoidPtr((void *)&sqlite3_open_v2);
}

static PyObject *
library_version(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(args))
{
    return PyUnicode_FromString(sqlite3_libversion());
}

static PyMethodDef methods[] = {
    {"read_range", read_range, METH_VARARGS,
     "read_range(path, events_table, chain_table, first, last, previous_position, "
     "previous_link, /) -> (plain, digests, links)"},
    {"open_v2_address", open_v2_address, METH_NOARGS,
     "The address of the sqlite3_open_v2 this module calls (to check that it is the same "
     "SQLite library as Python's sqlite3 module's)."},
    {"library_version", library_version, METH_NOARGS, "sqlite3_libversion()"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "services.event_store._log_reader",
    .m_doc = "A range of a SQLite store's log read and hashed (see log_blobs.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__log_reader(void)
{
    if (sha256_md == NULL) {
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
        if (sha256_md == NULL) {
            PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
            return NULL;
        }
    }
    return PyModule_Create(&module_def);
}
