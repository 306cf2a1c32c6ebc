"""fastproxy: an HTTP/1.1 edge reverse proxy and API gateway that runs KrakenD configurations."""

from fastproxy._extensions import BuildError, build_mode, disabled, install_source_only

__version__ = "0.1.0"
__all__ = ["BuildError", "build_mode", "__version__"]

if disabled():  # FASTPROXY_NO_EXTENSIONS=1: every fastproxy.* module from its .py, compiled or not
    install_source_only()
