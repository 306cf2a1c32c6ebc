"""Rate limiting: token buckets and bounded per-client bucket tables."""
