"""Errors fastproxy answers itself for a failing backend, with KrakenD's router options."""

from tests.support import Proxy, config, ep, free_port, get


def test_return_error_msg_puts_the_backend_error_in_the_body(upstream, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    quiet = Proxy(config([dead], [ep("/dead", "/x")]), tmp_path, name="quiet.json")
    loud = Proxy(config([dead], [ep("/dead", "/x")], extra_config={"router": {"return_error_msg": True}}),
                 tmp_path, name="loud.json")
    try:
        status, _, body = get(quiet.port, "/dead")
        assert (status, body) == (502, b"")
        status, _, body = get(loud.port, "/dead")
        assert status == 502 and b"refused" in body.lower(), body
    finally:
        quiet.stop()
        loud.stop()
