"""Backend side: DNS cache, keep-alive pool, the backend-facing protocol, and the circuit breakers
per backend host (breakers.py; the state machine itself is fastproxy/breaker.py)."""
