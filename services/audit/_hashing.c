/* SHA-256 over many pieces of one buffer, for ``cbcm audit verify`` (issue #15, ADR 32).
 *
 * Python's hashlib costs about 0.3 us a call whatever the length, so a verifier hashing
 * three short inputs an event in Python spends most of its time calling, not hashing. These
 * two functions do the same hashing as ``services.audit.hashing``'s pure-Python twins, with
 * OpenSSL (the library hashlib itself uses), one call per batch:
 *
 * - ``sha256_segments(data, bounds, prefix=b"")``: the digests of
 *   ``prefix + data[bounds[i]:bounds[i+1]]``, one after the other (32 bytes each); ``bounds``
 *   is a buffer of native signed 64-bit ints, non-decreasing, within ``len(data)``.
 * - ``rfc6962_roots(leaves, width)``: for each group of ``width`` leaf hashes (32 bytes each;
 *   ``width`` a power of two), the RFC 6962 tree hash of the group (nodes
 *   ``SHA-256(0x01 || left || right)``), one after the other.
 *
 * Nothing else: no parsing, no comparison. Bad arguments raise ValueError before any hashing.
 * The GIL is released while hashing; the buffers stay exported (so not resized) meanwhile.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

static EVP_MD *sha256_md = NULL;

static int
digest(EVP_MD_CTX *ctx, const unsigned char *prefix, size_t prefix_size,
       const unsigned char *data, size_t size, unsigned char *out)
{
    unsigned int written = 0;
    if (EVP_DigestInit_ex(ctx, sha256_md, NULL) != 1) return -1;
    if (prefix_size && EVP_DigestUpdate(ctx, prefix, prefix_size) != 1) return -1;
    if (size && EVP_DigestUpdate(ctx, data, size) != 1) return -1;
    if (EVP_DigestFinal_ex(ctx, out, &written) != 1 || written != 32) return -1;
    return 0;
}

static PyObject *
sha256_segments(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer data, bounds, prefix = {0};
    if (!PyArg_ParseTuple(args, "y*y*|y*:sha256_segments", &data, &bounds, &prefix)) return NULL;
    PyObject *result = NULL;
    if (bounds.len % (Py_ssize_t)sizeof(int64_t) != 0) {
        PyErr_SetString(PyExc_ValueError, "bounds: a whole number of 64-bit integers");
        goto done;
    }
    Py_ssize_t count = bounds.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t pieces = count > 0 ? count - 1 : 0;
    const unsigned char *raw = bounds.buf;
    int64_t previous = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t at;
        memcpy(&at, raw + i * sizeof(int64_t), sizeof at);
        if (at < 0 || at > (int64_t)data.len || (i > 0 && at < previous)) {
            PyErr_Format(PyExc_ValueError,
                         "bounds[%zd] = %lld: bounds must be non-decreasing, within 0..%zd", i,
                         (long long)at, data.len);
            goto done;
        }
        previous = at;
    }
    result = PyBytes_FromStringAndSize(NULL, pieces * 32);
    if (result == NULL) goto done;
    if (pieces) {
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
        const unsigned char *bytes = data.buf;
        int failed = 0;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (ctx == NULL) {
            Py_CLEAR(result);
            PyErr_NoMemory();
            goto done;
        }
        Py_BEGIN_ALLOW_THREADS
        int64_t start, end;
        memcpy(&start, raw, sizeof start);
        for (Py_ssize_t i = 0; i < pieces && !failed; i++) {
            memcpy(&end, raw + (i + 1) * sizeof(int64_t), sizeof end);
            failed = digest(ctx, prefix.buf, (size_t)prefix.len, bytes + start,
                            (size_t)(end - start), out + i * 32);
            start = end;
        }
        Py_END_ALLOW_THREADS
        EVP_MD_CTX_free(ctx);
        if (failed) {
            Py_CLEAR(result);
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL's SHA-256 failed");
        }
    }
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&bounds);
    if (prefix.obj != NULL) PyBuffer_Release(&prefix);
    return result;
}

static PyObject *
rfc6962_roots(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer leaves;
    Py_ssize_t width;
    if (!PyArg_ParseTuple(args, "y*n:rfc6962_roots", &leaves, &width)) return NULL;
    PyObject *result = NULL;
    unsigned char *scratch = NULL;
    if (width < 1 || (width & (width - 1)) != 0 || width > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "width: a power of two, at most 2**20");
        goto done;
    }
    if (leaves.len % (32 * width) != 0) {
        PyErr_SetString(PyExc_ValueError, "leaves: whole groups of width 32-byte hashes");
        goto done;
    }
    Py_ssize_t groups = leaves.len / (32 * width);
    result = PyBytes_FromStringAndSize(NULL, groups * 32);
    if (result == NULL) goto done;
    if (groups) {
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
            for (Py_ssize_t n = width; n > 1 && !failed; n /= 2) {
                for (Py_ssize_t j = 0; j < n / 2 && !failed; j++) {
                    memcpy(node + 1, scratch + 64 * j, 64);
                    failed = digest(ctx, NULL, 0, node, 65, scratch + 32 * j);
                }
            }
            memcpy(out + g * 32, scratch, 32);
        }
        Py_END_ALLOW_THREADS
        EVP_MD_CTX_free(ctx);
        if (failed) {
            Py_CLEAR(result);
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL's SHA-256 failed");
        }
    }
done:
    PyMem_Free(scratch);
    PyBuffer_Release(&leaves);
    return result;
}

static PyMethodDef methods[] = {
    {"sha256_segments", sha256_segments, METH_VARARGS,
     "sha256_segments(data, bounds, prefix=b'') -> the digests of prefix + "
     "data[bounds[i]:bounds[i+1]], joined."},
    {"rfc6962_roots", rfc6962_roots, METH_VARARGS,
     "rfc6962_roots(leaves, width) -> the RFC 6962 tree hash of each group of width leaves."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "services.audit._hashing",
    .m_doc = "SHA-256 over many pieces of one buffer (see services.audit.hashing).",
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
