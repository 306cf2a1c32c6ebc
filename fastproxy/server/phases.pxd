# C types for fastproxy/server/phases.py when compiled (setup.py; pure-Python mode).
cimport cython

from fastproxy.server.exchange cimport Exchange


@cython.final
cdef class Answer:
    cdef public int status
    cdef public str reason
    cdef public bytes body
    cdef public tuple extra
    cdef public bytes content_type


cpdef Answer route(snap, Exchange x, worker)
cpdef retry(Exchange x, kind)
