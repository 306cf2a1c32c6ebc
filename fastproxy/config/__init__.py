"""Configuration: KrakenD-format schema, loading with precise errors, compilation to a snapshot."""
