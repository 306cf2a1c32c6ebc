"""HTTP/1.1 wire helpers: request-head checks and response serialization. No sockets here."""
