# C types for fastproxy/limits/bucket.py when compiled (setup.py; pure-Python mode: the .py is
# the source, this file only declares types). Read-only attributes are those the tests inspect.
cimport cython


@cython.final
cdef class TokenBucket:
    cdef readonly double _rate
    cdef readonly double _interval
    cdef readonly double _cap
    cdef readonly double _tokens
    cdef readonly double _last
    cdef readonly double _ready

    @cython.locals(t=cython.double)
    cpdef bint take(self, double now)

    @cython.locals(ready=cython.double, r=cython.double)
    cpdef double retry_after(self, double now)

    @cython.locals(tokens=cython.double)
    cpdef remaining(self, double now)

    @cython.locals(r=cython.double)
    cpdef double reset_after(self, double now)


@cython.final
cdef class BucketTable:
    cdef double _rate
    cdef double _interval
    cdef object _cap
    cdef double _capf
    cdef Py_ssize_t _max
    cdef Py_ssize_t _low
    cdef readonly dict _buckets
    cdef bytes _salt
    cdef public Py_ssize_t idle_dropped
    cdef public Py_ssize_t evicted

    @cython.locals(b=TokenBucket)
    cpdef bint take(self, key, double now)

    @cython.locals(b=TokenBucket)
    cpdef TokenBucket bucket(self, key, double now)

    @cython.locals(b=TokenBucket)
    cpdef double retry_after(self, key, double now)

    @cython.locals(b=TokenBucket)
    cpdef remaining(self, key, double now)

    @cython.locals(b=TokenBucket)
    cpdef double reset_after(self, key, double now)

    @cython.locals(b=TokenBucket)
    cpdef TokenBucket _insert(self, key, double now)

    @cython.locals(d=dict, rate=cython.double, cap=cython.double, extra=Py_ssize_t, b=TokenBucket)
    cpdef _sweep(self, double now)
