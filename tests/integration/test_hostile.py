#!/usr/bin/env python3
"""test_hostile: gplqd against clients that try to break it, over HTTP on 127.0.0.1 (issue 15).

Each test is an attack found by trying gplqd as an attacker would, sent to a real daemon; each
failed before its fix. Request smuggling: two Content-Length headers, or Content-Length with
Transfer-Encoding, are refused with 400 before any body is read. A %00 in the URL is refused
rather than decoded (it ended the path early: /v1/jobs/ID%00/artifacts was served as the job).
The webhook SSRF guard judges the IPv6 forms that reach IPv4 by the IPv4 they reach.

Run: /usr/bin/python3 tests/integration/test_hostile.py [name-filter]   (GPLQ_BUILD=build)
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gplqd_harness import Daemon, read_http_response, run_tests  # noqa: E402

SECRET = "a webhook secret of 32 characters"


def raw(d, head, body=b""):
    """Sends head (the request line and headers, without the blank line) and body; the answer."""
    s = d.raw_socket()
    try:
        s.sendall(head + b"\r\n\r\n" + body)
        return read_http_response(s)
    finally:
        s.close()


def test_ambiguous_framing_is_refused():
    with Daemon(workers=0) as d:
        auth = d.auth_header().rstrip(b"\r\n")
        body = b'{"model_id": "m_x", "dataset_id": "fashion-mnist"}'
        cases = [
            (b"Content-Length: %d\r\nContent-Length: %d" % (len(body), len(body)), body,
             "one Content-Length"),
            (b"Content-Length: 5\r\ncontent-length: %d" % len(body), body, "one Content-Length"),
            (b"Content-Length: %d\r\nTransfer-Encoding: chunked" % len(body),
             b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body), "not both"),
        ]
        for headers, sent, says in cases:
            status, _, got = raw(d, b"POST /v1/jobs HTTP/1.1\r\nHost: t\r\n" + auth + b"\r\n" +
                                 b"Content-Type: application/json\r\n" + headers, sent)
            err = json.loads(got)["error"]
            assert status == 400 and says in err["message"], (headers, status, got)
        # nothing was made by the refused requests, and a plain request still works
        assert d.get("/v1/jobs").json()["jobs"] == []
        assert d.get("/v1/health", token=None).status == 200


def test_a_nul_in_the_url_is_refused():
    with Daemon(workers=0) as d:
        mid = d.upload_model().json()["id"]
        job = d.create_job(mid, train_subset=64).json()["id"]
        for path in ("/v1/jobs/%s%%00/artifacts" % job, "/v1/jobs/%s%%00" % job,
                     "/v1/jobs?state=queued%00", "/v1/models%00/x"):
            r = d.get(path)
            assert r.status == 400 and "%00" in r.error()["message"], (path, r)
        # the job itself is untouched and still served by its plain path
        assert d.get("/v1/jobs/" + job).json()["state"] == "queued"
        # an escaped percent sign that is not a NUL still decodes
        r = d.get("/v1/jobs/%6a_nope")  # "%6a" is "j"
        assert r.status == 404 and "j_nope" in r.error()["message"], r


def test_webhook_ssrf_guard_covers_ipv6_transition_forms():
    with Daemon(workers=0) as d:
        mid = d.upload_model().json()["id"]
        for host in ("[::127.0.0.1]", "[::ffff:0:169.254.169.254]", "[64:ff9b::a00:1]",
                     "[64:ff9b:1::5db8:d822]", "[2002:7f00:1::]", "[fec0::1]",
                     "[2001:0:4136:e378::1]", "[100::1]"):
            r = d.create_job(mid, webhook={"url": "http://%s:8080/x" % host, "secret": SECRET})
            assert r.status == 400 and r.error()["field"] == "webhook.url", (host, r)
        # a public IPv6 address, and a 6to4 one that embeds a public IPv4, pass
        for host in ("[2606:4700::1111]", "[2002:5db8:d822::1]"):
            r = d.create_job(mid, webhook={"url": "http://%s/x" % host, "secret": SECRET})
            assert r.status == 201, (host, r)


if __name__ == "__main__":
    run_tests(globals())
