"""HTTP/1.1 wire rules as pure functions and small classes, no sockets: request-head rules
(request.py), heads read from their raw bytes (head.py), hop-by-hop sets and framing
(wire.py), the backend request head (upstream_head.py), responses fastproxy writes itself
(response.py)."""
