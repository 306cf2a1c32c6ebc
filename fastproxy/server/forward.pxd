# C types for fastproxy/server/forward.py when compiled (setup.py; pure-Python mode).
cimport cython

from fastproxy.http.upstream_head cimport backend_method, backend_target, request_head
from fastproxy.server.connection cimport ClientConnection
from fastproxy.server.exchange cimport Exchange
from fastproxy.upstream.connection cimport UpstreamConnection
from fastproxy.upstream.pool cimport Pool



@cython.locals(checks=tuple)
cpdef dispatch(ClientConnection conn, Exchange x)
cpdef checked(ClientConnection conn, Exchange x, err)
cpdef reject(ClientConnection conn, Exchange x, rej)
@cython.locals(pool=Pool, up=UpstreamConnection, bchecks=tuple)
cpdef send_upstream(ClientConnection conn, Exchange x, avoid, double now, bint fresh=*)
@cython.locals(parts=list, buf=list, method=bytes, held=list)
cpdef attach(ClientConnection conn, Exchange x, UpstreamConnection up)
cpdef upstream_failed(ClientConnection conn, Exchange x, kind, str detail=*)
@cython.locals(size=Py_ssize_t)
cpdef Py_ssize_t body_size(list buf)
