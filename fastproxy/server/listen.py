"""Opening listeners, and the one check that the main port is not already served (SPEC §1).

Workers share the port through SO_REUSEPORT, and the kernel lets any other socket with that
option (of the same user) join the group: a second fastproxy, or any program listening with
SO_REUSEPORT, would silently take a share of the connections. So before anything of ours holds
the port, the master binds a plain socket to it (SO_REUSEADDR only, which passes over TIME_WAIT
but never over a live socket on Linux) and closes it again without listening. The kernel refuses
that bind whenever any socket holds the port on an overlapping address: a plain or SO_REUSEPORT
listener, on the same address, on the wildcard (0.0.0.0 or a dual-stack ::), or, when we bind the
wildcard, on one specific address. One worker binds without SO_REUSEPORT at all, so nothing can
join it later either.

Every failure to open a listener is a `ListenError` whose text names the listener and the
address: the command line prints it as it is, a forked worker writes it to its log.
"""

import errno
import os
import socket
from typing import Optional


class ListenError(Exception):
    """A listener that could not be opened; the message says which, where and why."""


def show_addr(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def reason(exc: OSError) -> str:
    """The cause of a failed bind in words (uvloop's messages repeat the address: not used)."""
    if exc.errno == errno.EADDRINUSE:
        return "the port is already in use by another process"
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc)


def _socket(ip: str) -> socket.socket:
    return socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)


def make_listener(ip: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A non-blocking listening socket on (ip, port); `ListenError` when the bind fails."""
    sock = _socket(ip)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((ip, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {show_addr(ip, port)}: {reason(exc)}") from exc
    return sock


def port_taken(ip: str, port: int, what: str = "") -> Optional[str]:
    """Why (ip, port) cannot be ours alone, or None when nothing holds it. `what` names the
    listener in the message ("the admin address ").

    Binds a plain socket and closes it at once; it never listens, so no connection can land in
    it. Call it before any worker binds: our own SO_REUSEPORT sockets would make it fail too.
    """
    sock = _socket(ip)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
    except OSError as exc:
        return f"cannot listen on {what}{show_addr(ip, port)}: {reason(exc)}"
    finally:
        sock.close()
    return None
