# C types for fastproxy/server/exchange.py when compiled (setup.py; pure-Python mode).
cimport cython

from fastproxy.http.head cimport RequestHead, ResponseHead
from fastproxy.http.wire cimport ChunkedEnd, response_framing
from fastproxy.upstream.connection cimport UpstreamConnection



@cython.final
cdef class Exchange(RequestHead):
    cdef public object conn
    cdef public long long body_left
    cdef public ChunkedEnd chunks
    cdef public bint body_done
    cdef public long long body_size
    cdef public list body_buf
    cdef public bint body_sent
    cdef public object route
    cdef public object rstate
    cdef public dict params
    cdef public bytes rest
    cdef public object client_ip
    cdef public object rl
    cdef public bytes up_extra
    cdef public UpstreamConnection up
    cdef public object target
    cdef public object breaker
    cdef public object ticket
    cdef public bint retried
    cdef public double started
    cdef public int phase
    cdef public int status
    cdef public int framing
    cdef public bint head_sent
    cdef public list out
    cdef public str reason
    cdef public object error
    cdef public bint recorded
    cdef public bint upgrade

    @cython.locals(status=cython.int, parts=list, length=cython.longlong, close=bint)
    cpdef up_head(self, ResponseHead head)
    cpdef up_body(self, bytes data)
    cpdef up_flush(self)
    cdef _write_out(self)
    cpdef bint up_end(self, bint framed)
    cpdef up_upgrade(self, UpstreamConnection up, bytes raw, bytes rest)
    cpdef up_error(self, kind)
    cpdef up_pause(self)
    cpdef up_resume(self)
    cpdef abandon(self, double now)
