# C types for fastproxy/upstream/select.py when compiled (setup.py; pure-Python mode).
cimport cython


@cython.final
cdef class Picked:
    cdef public object target
    cdef public object breaker
    cdef public object ticket


@cython.locals(n=Py_ssize_t, i=Py_ssize_t, k=Py_ssize_t, soonest=cython.double)
cpdef object pick(tuple targets, rs, avoid, double now)
