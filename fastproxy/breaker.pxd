# C types for fastproxy/breaker.py when compiled (setup.py; pure-Python mode: the .py is the
# source, this file only declares types). Public: the settings other modules read and set
# (on_change); read-only: the private state the tests inspect.
cimport cython


@cython.final
cdef class CircuitBreaker:
    cdef public object max_errors
    cdef public double interval
    cdef public double timeout
    cdef public object name
    cdef public object on_change
    cdef readonly object _state
    cdef readonly Py_ssize_t _generation
    cdef Py_ssize_t _failures
    cdef double _expiry
    cdef readonly bint _probe_busy

    cpdef _new_generation(self, double now)
    cpdef _set_state(self, new, double now)
    cpdef _refresh(self, double now)
    cpdef before(self, double now)
    cpdef after(self, ticket, bint ok, double now)
    cpdef cancel(self, ticket, double now)
    cpdef state(self, double now)
    cpdef double retry_after(self, double now)
    cpdef bint allows(self, double now)
