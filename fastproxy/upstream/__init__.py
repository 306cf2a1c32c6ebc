"""Backend side: DNS cache, keep-alive pool, the backend-facing protocol."""
