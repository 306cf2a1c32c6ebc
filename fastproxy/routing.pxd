# C types for fastproxy/routing.py when compiled (setup.py; pure-Python mode: the .py is the
# source, this file only declares types).
cimport cython


@cython.final
cdef class _Node:
    cdef public dict literal
    cdef public _Node param
    cdef public object param_name
    cdef public dict methods
    cdef public dict wild


@cython.final
cdef class RouteTable:
    cdef public dict static
    cdef public _Node root
    cdef set _implicit_head

    cpdef _insert(self, dict table, m, pattern, value)

    @cython.locals(table=dict, refused=list, allowed=dict, t=dict)
    cpdef match(self, method, path)

    @cython.locals(child=_Node, value=object)
    cpdef _walk(self, _Node node, list segs, Py_ssize_t i, dict params, method, list refused)
