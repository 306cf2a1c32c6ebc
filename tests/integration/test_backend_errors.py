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


def test_an_answer_cut_by_its_backend_is_counted_and_logged_with_the_reason(upstream, tmp_path):
    import json
    import time

    from tests.support import raw

    px = Proxy(config(upstream, [ep("/t", "/truncate")], extra_config={"fastproxy": {"access_log": True}}),
               tmp_path, name="cut.json")
    try:
        data = raw(px.port, b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"0123456789")  # cut, no clean end
        deadline = time.monotonic() + 5
        lines: list = []
        while not lines and time.monotonic() < deadline:
            lines = [json.loads(line) for line in px.stderr().splitlines() if line.startswith("{")]
            time.sleep(0.02)
        assert lines and lines[-1]["status"] == 200 and lines[-1]["reason"] == "backend reset mid-response"
    finally:
        px.stop()
