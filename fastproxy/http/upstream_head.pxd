# C types for fastproxy/http/upstream_head.py when compiled (setup.py; pure-Python mode).
cimport cython

from fastproxy.http.head cimport RequestHead


@cython.locals(template=tuple, pieces=list, target=bytes, qm=cython.int)
cpdef bytes backend_target(RequestHead h, route, dict params, bytes rest)
cpdef bytes backend_method(RequestHead h, route)
@cython.locals(parts=list)
cpdef list request_head(RequestHead h, route, target, bytes method, bytes path, bytes xff, bytes extra)
