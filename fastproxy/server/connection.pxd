# C types for fastproxy/server/connection.py when compiled (setup.py; pure-Python mode).
cimport cython

from fastproxy.http.head cimport find_crlf, find_head_end, scan_request
from fastproxy.http.wire cimport ChunkedEnd
from fastproxy.server.exchange cimport Exchange
from fastproxy.server.flow cimport FlowControl
from fastproxy.upstream.connection cimport UpstreamConnection



@cython.final
cdef class ClientConnection:
    cdef public object w
    cdef public object transport
    cdef public object parser
    cdef public FlowControl flow
    cdef public str peer
    cdef public bytes peer_b
    cdef public Exchange cur
    cdef public list queue
    cdef public double deadline
    cdef public int dl_kind
    cdef public bint closing
    cdef public bytes pending
    cdef public bint llhttp_done
    cdef public Py_ssize_t buffered
    cdef public bint writing_paused
    cdef public bint broken
    cdef public list held
    cdef public bint dispatching
    cdef public object host_ok
    cdef public bint eof
    cdef public bytearray early
    cdef public object tunnel

    @cython.locals(held=list, x=Exchange, up=UpstreamConnection, out=bytes)
    cpdef data_received(self, bytes data)
    @cython.locals(pending=bytes, fed=Py_ssize_t, pos=Py_ssize_t, n=Py_ssize_t, end=Py_ssize_t,
                   take=Py_ssize_t, x=Exchange, chunks=ChunkedEnd, ended=bint, rest=bytes)
    cpdef read(self, bytes data)
    cpdef bint parse(self, bytes data, Py_ssize_t start, Py_ssize_t end)
    cpdef flush_held(self, Exchange failed, list held=*)
    cpdef send_up(self, Exchange x, UpstreamConnection up, bytes data)
    @cython.locals(x=Exchange, up=UpstreamConnection)
    cpdef on_body(self, bytes body)
    cpdef on_message_complete(self)
    @cython.locals(x=Exchange, q=list)
    cpdef bint head(self, bytes raw, limits)
    @cython.locals(up=UpstreamConnection)
    cpdef message_done(self, Exchange x)
    cpdef upstream_failed(self, Exchange x, kind, str detail=*)
    cpdef record(self, Exchange x)
    @cython.locals(q=list, nxt=Exchange, buf=list)
    cpdef finish(self, Exchange x, double now=*)
    cpdef linger_close(self)
    @cython.locals(x=Exchange, q=list)
    cpdef refuse(self, err)
    cpdef evict(self)
    cpdef bint idle(self)
    @cython.locals(x=Exchange, kind=cython.int)
    cpdef expire(self, double now)
