# C types for fastproxy/upstream/connection.py when compiled (setup.py; pure-Python mode).
cimport cython

from fastproxy.http.head cimport ResponseHead



@cython.final
cdef class UpstreamConnection:
    cdef public object pool
    cdef public object transport
    cdef public object parser
    cdef public object sink
    cdef public int state
    cdef public double released_at
    cdef public bytes pending
    cdef public bint head_request
    cdef public bint reusable
    cdef public bint reading_paused
    cdef public bint resp_started
    cdef public bint framed
    cdef public bint reused
    cdef public bint ended
    cdef public double sent_at
    cdef public bint upgrade

    cpdef data_received(self, bytes data)
    @cython.locals(end=Py_ssize_t, head=ResponseHead, length=cython.longlong)
    cdef bytes _read_head(self, sink, bytes data)
    cpdef on_message_begin(self)
    cpdef on_body(self, bytes body)
    cpdef on_message_complete(self)
    cpdef start(self, sink, bytes head, bint is_head)
    cpdef write(self, bytes data)
    cpdef writelines(self, list parts)
    cpdef pause_reading(self)
    cpdef resume_reading(self)
    cpdef fail(self, kind)
    cpdef release(self)
    cpdef detach(self)
    cpdef close(self)
    cpdef abort(self)
