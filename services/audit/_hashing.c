/* SHA-256 over many pieces of a buffer, for ``cbcm audit verify`` (issue #15, ADR 33).
 *
 * Python's hashlib costs about 0.3 us a call whatever the length, so a verifier hashing
 * three short inputs an event in Python spends most of its time calling, not hashing. These
 * functions do the same hashing as ``services.audit.hashing``'s pure-Python twins, with
 * OpenSSL (the library hashlib itself uses), one call per batch:
 *
 * - ``sha256_segments(data, bounds, prefix=b"")``: the digests of
 *   ``prefix + data[bounds[i]:bounds[i+1]]``, one after the other (32 bytes each);
 * - ``rfc6962_roots(leaves, width)``: for each group of ``width`` leaf hashes (32 bytes each;
 *   ``width`` a power of two), the RFC 6962 tree hash of the group (nodes
 *   ``SHA-256(0x01 || left || right)``), one after the other.
 *
 * ``bounds`` is a buffer of native signed 64-bit integers, non-decreasing, within the
 * data. Nothing else is done here: no parsing, no comparison. Bad arguments raise ValueError
 * before any hashing. The GIL is released while hashing: the bounds are copied first, and the
 * data buffers stay exported (so not resized) meanwhile.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

static EVP_MD *sha256_md = NULL;

/* Copies and checks a bounds buffer against ``size``: 0 and *out set, or -1 with an error. */
static int
copy_bounds(PyObject *object, Py_ssize_t size, int64_t **out, Py_ssize_t *count)
{
    Py_buffer view;
    if (PyObject_GetBuffer(object, &view, PyBUF_SIMPLE) < 0) return -1;
    int result = -1;
    if (view.len % (Py_ssize_t)sizeof(int64_t) != 0) {
        PyErr_SetString(PyExc_ValueError, "bounds: a whole number of 64-bit integers");
        goto done;
    }
    *count = view.len / (Py_ssize_t)sizeof(int64_t);
    *out = PyMem_Malloc(view.len ? (size_t)view.len : 1);
    if (*out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(*out, view.buf, (size_t)view.len);
    for (Py_ssize_t i = 0; i < *count; i++) {
        int64_t at = (*out)[i];
        if (at < 0 || at > (int64_t)size || (i > 0 && at < (*out)[i - 1])) {
            PyErr_Format(PyExc_ValueError,
                         "bounds[%zd] = %lld: bounds must be non-decreasing, within 0..%zd", i,
                         (long long)at, size);
            PyMem_Free(*out);
            *out = NULL;
            goto done;
        }
    }
    result = 0;
done:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
failed_openssl(void)
{
    PyErr_SetString(PyExc_RuntimeError, "OpenSSL's SHA-256 failed");
    return NULL;
}

/* The digest of prefix + data[bounds[i]:bounds[i+1]] for each i into ``out``: 0, or -1 when
 * OpenSSL fails. Runs without the GIL: ``bounds`` is our own checked copy. */
static int
hash_segments(EVP_MD_CTX *ctx, const unsigned char *prefix, size_t prefix_size,
              const unsigned char *data, const int64_t *bounds, Py_ssize_t pieces,
              unsigned char *out)
{
    for (Py_ssize_t i = 0; i < pieces; i++) {
        unsigned int written = 0;
        int64_t start = bounds[i], end = bounds[i + 1];
        if (EVP_DigestInit_ex(ctx, sha256_md, NULL) != 1) return -1;
        if (prefix_size && EVP_DigestUpdate(ctx, prefix, prefix_size) != 1) return -1;
        if (end > start && EVP_DigestUpdate(ctx, data + start, (size_t)(end - start)) != 1)
            return -1;
        if (EVP_DigestFinal_ex(ctx, out + i * 32, &written) != 1 || written != 32) return -1;
    }
    return 0;
}

static PyObject *
sha256_segments(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer data = {0}, prefix = {0};
    PyObject *bounds_object;
    if (!PyArg_ParseTuple(args, "y*O|y*:sha256_segments", &data, &bounds_object, &prefix))
        return NULL;
    PyObject *result = NULL;
    int64_t *bounds = NULL;
    Py_ssize_t count = 0;
    if (copy_bounds(bounds_object, data.len, &bounds, &count) < 0) goto done;
    Py_ssize_t pieces = count > 0 ? count - 1 : 0;
    result = PyBytes_FromStringAndSize(NULL, pieces * 32);
    if (result == NULL || pieces == 0) goto done;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = hash_segments(ctx, prefix.buf, (size_t)prefix.len, data.buf, bounds, pieces, out);
    Py_END_ALLOW_THREADS
    EVP_MD_CTX_free(ctx);
    if (failed) {
        Py_CLEAR(result);
        failed_openssl();
    }
done:
    PyMem_Free(bounds);
    PyBuffer_Release(&data);
    if (prefix.obj != NULL) PyBuffer_Release(&prefix);
    return result;
}

static PyObject *
rfc6962_roots(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer leaves;
    PyObject *width_object;
    if (!PyArg_ParseTuple(args, "y*O:rfc6962_roots", &leaves, &width_object)) return NULL;
    PyObject *result = NULL;
    unsigned char *scratch = NULL;
    if (!PyLong_Check(width_object)) {
        PyErr_SetString(PyExc_TypeError, "width: an int");
        goto done;
    }
    int overflow = 0;
    long long width = PyLong_AsLongLongAndOverflow(width_object, &overflow);
    if (overflow || width < 1 || (width & (width - 1)) != 0 || width > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "width: a power of two, at most 2**20");
        goto done;
    }
    if (leaves.len % (32 * width) != 0) {
        PyErr_SetString(PyExc_ValueError, "leaves: whole groups of width 32-byte hashes");
        goto done;
    }
    Py_ssize_t groups = leaves.len / (Py_ssize_t)(32 * width);
    result = PyBytes_FromStringAndSize(NULL, groups * 32);
    if (result == NULL || groups == 0) goto done;
    scratch = PyMem_Malloc((size_t)width * 32);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (scratch == NULL || ctx == NULL) {
        EVP_MD_CTX_free(ctx);
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    const unsigned char *in = leaves.buf;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    unsigned char node[65];
    node[0] = 0x01;
    for (Py_ssize_t g = 0; g < groups && !failed; g++) {
        memcpy(scratch, in + g * width * 32, (size_t)width * 32);
        for (long long n = width; n > 1 && !failed; n /= 2) {
            for (long long j = 0; j < n / 2 && !failed; j++) {
                unsigned int written = 0;
                memcpy(node + 1, scratch + 64 * j, 64);
                failed = EVP_DigestInit_ex(ctx, sha256_md, NULL) != 1 ||
                         EVP_DigestUpdate(ctx, node, 65) != 1 ||
                         EVP_DigestFinal_ex(ctx, scratch + 32 * j, &written) != 1 ||
                         written != 32;
            }
        }
        memcpy(out + g * 32, scratch, 32);
    }
    Py_END_ALLOW_THREADS
    EVP_MD_CTX_free(ctx);
    if (failed) {
        Py_CLEAR(result);
        failed_openssl();
    }
done:
    PyMem_Free(scratch);
    PyBuffer_Release(&leaves);
    return result;
}

static PyMethodDef methods[] = {
    {"sha256_segments", sha256_segments, METH_VARARGS,
     "sha256_segments(data, bounds, prefix=b'', /) -> the digests of prefix + "
     "data[bounds[i]:bounds[i+1]], joined."},
    {"rfc6962_roots", rfc6962_roots, METH_VARARGS,
     "rfc6962_roots(leaves, width, /) -> the RFC 6962 tree hash of each group of width "
     "leaves."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "services.audit._hashing",
    .m_doc = "SHA-256 over many pieces of a buffer (see services.audit.hashing).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__hashing(void)
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
