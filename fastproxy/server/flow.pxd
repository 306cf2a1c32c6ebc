# C types for fastproxy/server/flow.py when compiled (setup.py; pure-Python mode).
cimport cython



@cython.final
cdef class FlowControl:
    cdef public object transport
    cdef public int reasons
    cdef public bint stopped

    cpdef pause(self, int reason)
    cpdef resume(self, int reason)
    cpdef clear(self)
