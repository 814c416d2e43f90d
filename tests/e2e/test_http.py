"""HTTP/1.1 conformance of the listeners, seen from a raw socket: keep-alive,
pipelining, chunked bodies, 100-continue, limits and smuggling shapes."""
import json
import time

from kiban import ServerTest, main, raw

SVC = "/v1/projects/default/services"


def status_of(resp):
    line = resp.split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else None


def body_of(resp):
    return resp.split(b"\r\n\r\n", 1)[1]


class HttpTest(ServerTest):
    server_args = ("--max-body", "4096", "--header-timeout", "1s")

    def req(self, data, **kw):
        return raw(self.srv.api_port, data, **kw)

    def test_keep_alive_and_pipelining(self):
        one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        resp = self.req(one * 3 + last)
        self.assertEqual(resp.count(b"HTTP/1.1 200 "), 4, resp)
        self.assertEqual(resp.count(b'{"status":"ok"}'), 4)

    def test_http10_closes(self):
        resp = self.req(b"GET /healthz HTTP/1.0\r\n\r\n")
        self.assertEqual(status_of(resp), 200)

    def test_chunked_request_body(self):
        body = json.dumps({"command": "/bin/true", "instances": 0}).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7])
                          for i in range(0, len(body), 7))
        head = ("POST %s?serviceId=chunky HTTP/1.1\r\nHost: x\r\n"
                "Authorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n"
                "Connection: close\r\n\r\n" % (SVC, self.srv.token)).encode()
        resp = self.req(head + chunks + b"0\r\n\r\n")
        self.assertEqual(status_of(resp), 200, resp)
        self.assertEqual(self.srv.api("GET", SVC + "/chunky").status, 200)

    def test_expect_100_continue(self):
        import socket
        s = socket.create_connection(("127.0.0.1", self.srv.api_port), timeout=5)
        body = json.dumps({"command": "/bin/true", "instances": 0}).encode()
        s.sendall(("POST %s?serviceId=cont HTTP/1.1\r\nHost: x\r\n"
                   "Authorization: Bearer %s\r\nContent-Length: %d\r\n"
                   "Expect: 100-continue\r\nConnection: close\r\n\r\n"
                   % (SVC, self.srv.token, len(body))).encode())
        interim = s.recv(4096)
        self.assertTrue(interim.startswith(b"HTTP/1.1 100 Continue"), interim)
        s.sendall(body)
        rest = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            rest += b
        s.close()
        self.assertEqual(status_of(rest), 200, rest)

    def assertRejected(self, data, code):
        resp = self.req(data)
        self.assertEqual(status_of(resp), code, resp)
        err = json.loads(body_of(resp))["error"]
        self.assertEqual(err["code"], code)
        self.assertIn(b"connection: close", resp.lower())

    def test_smuggling_shapes_rejected(self):
        base = b"POST /healthz HTTP/1.1\r\nHost: x\r\n"
        self.assertRejected(base + b"Content-Length: 3\r\nContent-Length: 3"
                            b"\r\n\r\nabc", 400)
        self.assertRejected(base + b"Content-Length: 3\r\nTransfer-Encoding: "
                            b"chunked\r\n\r\n0\r\n\r\n", 400)
        self.assertRejected(base + b"Transfer-Encoding: chunked, identity\r\n"
                            b"\r\n0\r\n\r\n", 400)
        self.assertRejected(base + b"Transfer-Encoding: gzip\r\n\r\n", 501)
        self.assertRejected(base + b"X-A: 1\rX-B: 2\r\n\r\n", 400)
        self.assertRejected(base + b"X-A: 1\r\n  folded\r\n\r\n", 400)
        self.assertRejected(base + b"Transfer-Encoding: chunked\r\n\r\n"
                            b"zz\r\nabc\r\n0\r\n\r\n", 400)
        self.assertRejected(base + b"Content-Length: -1\r\n\r\n", 400)
        self.assertRejected(b"GET /healthz HTTP/1.1\r\n\r\n", 400)  # no Host
        self.assertRejected(b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505)

    def test_limits(self):
        big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + \
            b"\r\n\r\n"
        self.assertRejected(big, 431)
        many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + \
            b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n"
        self.assertRejected(many, 431)
        self.assertRejected(b"POST /healthz HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 5000\r\n\r\n" + b"a" * 5000, 413)

    def test_slow_head_times_out(self):
        t0 = time.monotonic()
        resp = self.req(b"GET /healthz HTTP/1.1\r\nHost: x\r\n", timeout=10)
        self.assertEqual(status_of(resp), 408, resp)
        self.assertLess(time.monotonic() - t0, 9)   # the 1 s limit, not ours

    def test_server_still_healthy_after_abuse(self):
        for _ in range(20):
            self.req(b"\x00\x01garbage\r\n\r\n")
        self.assertEqual(self.srv.api("GET", "/healthz").status, 200)


if __name__ == "__main__":
    main()
