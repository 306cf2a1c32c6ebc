# C types for fastproxy/http/wire.py when compiled (setup.py; pure-Python mode).
cimport cython


cpdef bytes chunk(bytes data)


@cython.final
cdef class ChunkedEnd:
    cdef public int state
    cdef public long long left
    cdef public bint done
    cdef public Py_ssize_t trailer_bytes

    @cython.locals(i=Py_ssize_t, n=Py_ssize_t, state=cython.int, left=cython.longlong, take=Py_ssize_t, c=cython.uchar)
    cpdef Py_ssize_t feed(self, bytes data, Py_ssize_t start) except -1


cpdef int response_framing(long long length, bint version_11)
