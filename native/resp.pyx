# cython: language_level=3, boundscheck=False, wraparound=False
"""RESP2 encoding of whole command batches into one buffer; pure twin in `python/meetq/_resp.py`.

The batch is written into one growing C buffer (doubling `realloc`) and copied once into
the returned `bytes`: no intermediate Python object per argument on the hot types. Exact
`bytes` and `str` are copied straight from their storage (`str` through CPython's cached
UTF-8 form), exact `int`s that fit 64 bits are formatted in place, exact `float`s with the
same routine as `float.__repr__`. Everything else (memoryview, subclasses, bad types, a
command name holding spaces) takes a slow path that reproduces the pure twin, so both
produce the same bytes and raise the same errors as redis-py 5's encoder (see `_resp.py`).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free
from libc.stdlib cimport free, realloc
from libc.string cimport memchr, memcpy

from redis.exceptions import DataError


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1


# The storage accessors are macros outside the limited API and functions inside it; the
# limited API has no PyOS_double_to_string, so there floats take the slow path.
cdef extern from *:
    """
    #ifdef Py_LIMITED_API
    #define MEETQ_BYTES_DATA(o) PyBytes_AsString(o)
    #define MEETQ_BYTES_SIZE(o) PyBytes_Size(o)
    #define MEETQ_BYTEARRAY_DATA(o) PyByteArray_AsString(o)
    #define MEETQ_BYTEARRAY_SIZE(o) PyByteArray_Size(o)
    #define MEETQ_FAST_FLOAT 0
    static char* meetq_double_repr(PyObject* o) { (void)o; return NULL; }
    #else
    #define MEETQ_BYTES_DATA(o) PyBytes_AS_STRING(o)
    #define MEETQ_BYTES_SIZE(o) PyBytes_GET_SIZE(o)
    #define MEETQ_BYTEARRAY_DATA(o) PyByteArray_AS_STRING(o)
    #define MEETQ_BYTEARRAY_SIZE(o) PyByteArray_GET_SIZE(o)
    #define MEETQ_FAST_FLOAT 1
    static char* meetq_double_repr(PyObject* o) {
        return PyOS_double_to_string(PyFloat_AS_DOUBLE(o), 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    }
    #endif
    """
    char* MEETQ_BYTES_DATA(object o)
    Py_ssize_t MEETQ_BYTES_SIZE(object o)
    char* MEETQ_BYTEARRAY_DATA(object o)
    Py_ssize_t MEETQ_BYTEARRAY_SIZE(object o)
    bint MEETQ_FAST_FLOAT
    char* meetq_double_repr(object o) except NULL


cdef struct Buf:
    char* data
    Py_ssize_t size
    Py_ssize_t cap


cdef int _reserve(Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = b.size + extra
    cdef Py_ssize_t cap
    cdef char* data
    if need <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 4096
    while cap < need:
        cap *= 2
    data = <char*>realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.cap = cap
    return 0


cdef inline Py_ssize_t _format_int(char* out, long long value) noexcept:
    """Writes the decimal form of `value` into `out` (>= 21 bytes); returns its length."""
    cdef char tmp[24]
    cdef Py_ssize_t n = 0, i
    cdef unsigned long long v
    cdef bint neg = value < 0
    if neg:
        v = <unsigned long long>(-(value + 1)) + 1
    else:
        v = <unsigned long long>value
    while True:
        tmp[n] = <char>(48 + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    i = 0
    if neg:
        out[0] = 45  # '-'
        i = 1
    while n > 0:
        n -= 1
        out[i] = tmp[n]
        i += 1
    return i


cdef int _put_header(Buf* b, char kind, Py_ssize_t n) except -1:
    _reserve(b, 24)
    b.data[b.size] = kind
    b.size += 1
    b.size += _format_int(b.data + b.size, n)
    b.data[b.size] = 13
    b.data[b.size + 1] = 10
    b.size += 2
    return 0


cdef int _put_bulk(Buf* b, const char* data, Py_ssize_t n) except -1:
    _put_header(b, 36, n)  # '$'
    _reserve(b, n + 2)
    memcpy(b.data + b.size, data, n)
    b.size += n
    b.data[b.size] = 13
    b.data[b.size + 1] = 10
    b.size += 2
    return 0


def _slow_arg(value):
    """Bytes of an argument off the fast path: the same rules as `_resp._arg_bytes`."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise DataError(
            "Invalid input of type: 'bool'. Convert to a bytes, string, int or float first."
        )
    if isinstance(value, int):
        return int.__repr__(value).encode()
    if isinstance(value, float):
        return float.__repr__(value).encode()
    raise DataError(
        f"Invalid input of type: '{type(value).__name__}'. "
        "Convert to a bytes, string, int or float first."
    )


cdef int _put_arg(Buf* b, object value) except -1:
    cdef type cls = type(value)
    cdef const char* p
    cdef char* s
    cdef Py_ssize_t n
    cdef long long iv
    cdef int overflow = 0
    cdef char digits[24]
    if cls is bytes:
        _put_bulk(b, MEETQ_BYTES_DATA(value), MEETQ_BYTES_SIZE(value))
    elif cls is str:
        p = PyUnicode_AsUTF8AndSize(value, &n)
        _put_bulk(b, p, n)
    elif cls is int:
        iv = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow:
            data = int.__repr__(value).encode()
            _put_bulk(b, MEETQ_BYTES_DATA(data), MEETQ_BYTES_SIZE(data))
        else:
            n = _format_int(digits, iv)
            _put_bulk(b, digits, n)
    elif cls is float and MEETQ_FAST_FLOAT:
        s = meetq_double_repr(value)
        try:
            n = 0
            while s[n] != 0:
                n += 1
            _put_bulk(b, s, n)
        finally:
            PyMem_Free(s)
    elif cls is bytearray:
        _put_bulk(b, MEETQ_BYTEARRAY_DATA(value), MEETQ_BYTEARRAY_SIZE(value))
    else:
        data = _slow_arg(value)
        _put_bulk(b, MEETQ_BYTES_DATA(data), MEETQ_BYTES_SIZE(data))
    return 0


cdef bint _name_needs_split(object first) except -1:
    """redis-py splits a str command name on ASCII whitespace, a bytes one if it has a space."""
    cdef const char* p
    cdef Py_ssize_t n, i
    cdef char c
    if type(first) is str:
        p = PyUnicode_AsUTF8AndSize(first, &n)
        if n == 0:
            return True
        for i in range(n):
            c = p[i]
            if c == 32 or (9 <= c <= 13):
                return True
        return False
    if isinstance(first, str):
        return True  # a str subclass: let the slow path decide
    if isinstance(first, bytes):
        return memchr(MEETQ_BYTES_DATA(first), 32, MEETQ_BYTES_SIZE(first)) != NULL
    return False


cdef int _put_command(Buf* b, object args) except -1:
    cdef Py_ssize_t i, n
    if type(args) is not tuple and type(args) is not list:
        args = tuple(args)
    n = len(args)
    if n and _name_needs_split(args[0]):
        first = args[0]
        words = first.encode().split() if isinstance(first, str) else first.split()
        args = (*words, *args[1:])
        n = len(args)
    _put_header(b, 42, n)  # '*'
    for i in range(n):
        _put_arg(b, args[i])
    return 0


cdef bytes _finish(Buf* b):
    try:
        return PyBytes_FromStringAndSize(b.data, b.size)
    finally:
        free(b.data)
        b.data = NULL


def encode_command(args):
    """The RESP bytes of one command, e.g. `encode_command(("SET", "k", 1))`."""
    cdef Buf b
    b.data = NULL
    b.size = 0
    b.cap = 0
    try:
        _put_command(&b, args)
    except BaseException:
        free(b.data)
        raise
    return _finish(&b)


def encode_commands(commands):
    """The RESP bytes of a whole batch of commands, concatenated into one buffer."""
    cdef Buf b
    b.data = NULL
    b.size = 0
    b.cap = 0
    try:
        for args in commands:
            _put_command(&b, args)
    except BaseException:
        free(b.data)
        raise
    return _finish(&b)
