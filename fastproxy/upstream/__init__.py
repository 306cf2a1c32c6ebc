"""Backend side: the backend-facing protocol (connection.py, with the ResponseSink it talks to),
the keep-alive pool (pool.py), host selection with breakers (select.py), failure kinds
(errors.py), the DNS cache, and the circuit breakers per backend host (breakers.py; the state
machine itself is fastproxy/breaker.py)."""
