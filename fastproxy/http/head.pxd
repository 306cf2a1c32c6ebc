# C types for fastproxy/http/head.py when compiled (setup.py; pure-Python mode: the .py is the
# source, this file only declares types).
cimport cython

cdef bint _COMPILED
cdef bytes _REQUEST_FIRST
cdef bytes _RESPONSE_FIRST
cdef dict _REQUEST_NAMES
cdef dict _NAMED_FIRST
cdef tuple _BYTES
cdef Py_ssize_t _REQ_HOST, _REQ_CL, _REQ_TE, _REQ_EXPECT, _REQ_CONNECTION, _REQ_UA, _REQ_DROP


cdef class RequestHead:
    cdef public bytes raw
    cdef public bytes lower
    cdef public Py_ssize_t hdr
    cdef public list cuts
    cdef public bint dirty
    cdef public bytes method
    cdef public bytes url
    cdef public str version
    cdef public bint keep_alive
    cdef public object host
    cdef public Py_ssize_t host_count
    cdef public long long cl
    cdef public bint chunked
    cdef public bint expect
    cdef public object ua
    cdef public object conn_opts
    cdef public bytes path
    cdef public bytes query
    cdef public list _headers


@cython.final
cdef class ResponseHead:
    cdef public int status
    cdef public list lines
    cdef public long long length
    cdef public bint chunked
    cdef public bint keep_alive


@cython.locals(last=Py_ssize_t, p=cython.p_uchar)
cpdef Py_ssize_t find_crlf(bytes data, Py_ssize_t pos, Py_ssize_t end)

@cython.locals(p=cython.p_uchar)
cpdef Py_ssize_t find_char(bytes data, int ch, Py_ssize_t pos, Py_ssize_t end)

@cython.locals(last=Py_ssize_t, c=cython.uchar, p=cython.p_uchar)
cpdef Py_ssize_t find_head_end(bytes data, Py_ssize_t pos)

@cython.locals(end=Py_ssize_t, pos=Py_ssize_t, eol=Py_ssize_t, colon=Py_ssize_t)
cpdef list split_headers(bytes raw, bytes lower, Py_ssize_t start)

@cython.locals(n=Py_ssize_t, eol=Py_ssize_t, sp=Py_ssize_t, sp2=Py_ssize_t, end=Py_ssize_t, pos=Py_ssize_t,
               colon=Py_ssize_t, count=Py_ssize_t, kind=Py_ssize_t, c=cython.uchar, rp=cython.p_uchar,
               fp=cython.p_uchar, lp=cython.p_uchar, underscores=bint, names=dict, lower=bytes, url=bytes, ver=bytes, te=object,
               cuts=list, opts=object, version=str)
cpdef scan_request(RequestHead h, bytes raw, Py_ssize_t max_line, Py_ssize_t max_field, Py_ssize_t max_block,
                   Py_ssize_t max_fields, long long max_body)

@cython.locals(raw=bytes, p=Py_ssize_t, s=Py_ssize_t, i=Py_ssize_t, end=Py_ssize_t, cuts=list, parts=list,
               out=list)
cpdef list forwarded_block(RequestHead h)

@cython.locals(first=bytes, raw=bytes, n=Py_ssize_t, end=Py_ssize_t, pos=Py_ssize_t,
               eol=Py_ssize_t, colon=Py_ssize_t, rp=cython.p_uchar, fp=cython.p_uchar, lp=cython.p_uchar, out=list,
               lname=bytes)
cpdef list named_headers(RequestHead h, frozenset names)

@cython.locals(n=Py_ssize_t, eol=Py_ssize_t, rp=cython.p_uchar, fp=cython.p_uchar, lp=cython.p_uchar,
               status=cython.int,
               keep_alive=bint, end=Py_ssize_t, pos=Py_ssize_t, length=cython.longlong, lines=list, lower=object,
               kept=Py_ssize_t, colon=Py_ssize_t, name=bytes, chunked=bint)
cpdef ResponseHead scan_response(bytes raw, bint head_request)
