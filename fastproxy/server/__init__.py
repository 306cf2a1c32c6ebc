"""The client-facing server: connections, the phases of one request, workers and signals."""
