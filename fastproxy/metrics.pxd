# C types for fastproxy/metrics.py when compiled (setup.py; pure-Python mode).
cimport cython


@cython.final
cdef class Metrics:
    cdef public dict requests
    cdef public dict rejections
    cdef public dict upstream_errors
    cdef public dict breaker_transitions
    cdef public dict redis_switches
    cdef public Py_ssize_t connections_open
    cdef public Py_ssize_t connections_total
    cdef public Py_ssize_t evicted
    cdef public dict gauges
    cdef public dict upstream_latency
    cdef public dict passed
    cdef public Py_ssize_t tunnels_open
    cdef public Py_ssize_t tunnels_total
    cdef public long long tunnel_up
    cdef public long long tunnel_down

    @cython.locals(r=dict)
    cpdef request(self, x)
    @cython.locals(h=list)
    cpdef upstream(self, route, double seconds)
    @cython.locals(p=dict)
    cpdef policy_passed(self, route)
    cpdef rejected(self, route, reason)
    cpdef upstream_error(self, target, kind)
    cpdef breaker_transition(self, name, target, new)
