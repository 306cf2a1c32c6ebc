# C types for fastproxy/policies/chain.py when compiled (setup.py; pure-Python mode).
cimport cython


@cython.final
cdef class Pending:
    cdef public object future
    cdef public object check
    cdef public Py_ssize_t next


@cython.locals(i=Py_ssize_t, n=Py_ssize_t)
cpdef Pending run(tuple checks, x, Py_ssize_t start, double now)
