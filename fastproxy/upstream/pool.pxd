# C types for fastproxy/upstream/pool.py when compiled (setup.py; pure-Python mode).
cimport cython

from fastproxy.upstream.connection cimport UpstreamConnection


@cython.final
cdef class Pool:
    cdef public object target
    cdef public object idle
    cdef public Py_ssize_t max_idle
    cdef public double idle_timeout
    cdef public object loop
    cdef public object clock
    cdef public object dns
    cdef public double connect_timeout
    cdef public object ssl

    @cython.locals(conn=UpstreamConnection)
    cpdef UpstreamConnection get(self, double now)
    cpdef put(self, UpstreamConnection conn)
    cpdef forget(self, UpstreamConnection conn)
