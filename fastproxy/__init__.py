"""fastproxy: an HTTP/1.1 edge reverse proxy and API gateway that runs KrakenD configurations."""

__version__ = "0.1.0"
