"""Rate limiting: token buckets and bounded per-client tables (bucket.py), the stateless limits
(policy.py), limits shared through Redis (redis.py, redis_store.py), tiered limits (tiered.py) and
the RateLimit headers (headers.py)."""
