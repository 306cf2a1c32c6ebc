-- wrk script: every request is a POST with a 16 KiB body (Content-Length framing).
-- Used by bench/harness.py for the "post16k" scenario:
--   wrk -t1 -c64 -d5s --latency -s bench/post16k.lua http://127.0.0.1:PORT/post
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 1024) -- 16 * 1024 = 16384 bytes
wrk.headers["Content-Type"] = "application/octet-stream"
