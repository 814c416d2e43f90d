#!/usr/bin/env python3
"""The gateway listeners as clients see them: TLS termination with SNI over
two certificates, HTTP/2 by ALPN and by prior knowledge (h2c), gRPC-shaped
calls relayed end to end with their trailers, and the per-IP connection
limit.  Clients are curl, nghttp and openssl s_client; the gRPC backend is
nghttpd sending grpc-status trailers."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiban import Server, free_port, main, wait_for  # noqa: E402
import unittest  # noqa: E402


def cert(dir, name, sans):
    key = os.path.join(dir, name + ".key")
    crt = os.path.join(dir, name + ".pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out",
         crt, "-days", "1", "-subj", "/CN=" + sans[0], "-addext",
         "subjectAltName=" + ",".join("DNS:" + s for s in sans)],
        check=True, capture_output=True)
    return crt, key


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class ListenersTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kiban-listen-")
        cls.a = cert(cls.dir, "a", ["api.example.com"])
        cls.b = cert(cls.dir, "b", ["*.shop.example"])
        www = os.path.join(cls.dir, "www")
        os.mkdir(www)
        with open(os.path.join(www, "Say"), "w") as f:
            f.write("grpc-ish payload")
        cls.grpc_port = free_port()
        cls.backend = subprocess.Popen(
            ["nghttpd", "--no-tls", "-a", "127.0.0.1", "-d", www,
             "--echo-upload", "--no-content-length",
             "--trailer=grpc-status: 0", "--trailer=grpc-message: fine",
             str(cls.grpc_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: listening(cls.grpc_port), 10, what="nghttpd")
        cls.tls_port = free_port()
        cls.srv = Server(args=(
            "--gateway-tls-listen", "127.0.0.1:%d" % cls.tls_port,
            "--tls-cert", "%s:%s,%s:%s" % (cls.a + cls.b),
            "--max-conns-per-ip", "20")).start()
        r = cls.srv.api("POST", "/v1/projects/default/services?serviceId=hi",
                        {"command": os.environ.get("KIBAN_HELLO"),
                         "instances": 1})
        assert r.status == 200, r.body
        r = cls.srv.api("POST", "/v1/projects/default/gateways?gatewayId=g", {
            "openapi": {
                "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
                "x-google-backend": {"address": "service://hi"},
                "paths": {
                    "/hello": {"get": {}},
                    "/pkg.Greeter/{m}": {"post": {"x-google-backend": {
                        "address": "grpc://127.0.0.1:%d" % cls.grpc_port,
                        "path_translation": "APPEND_PATH_TO_ADDRESS"}}}}}})
        assert r.status == 200, r.body
        wait_for(lambda: cls.srv.gw("GET", "/hello").status == 200, 20,
                 what="the service")

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop()
        finally:
            cls.srv.cleanup()
            cls.backend.terminate()
            cls.backend.wait()
            shutil.rmtree(cls.dir, ignore_errors=True)

    def curl(self, *args):
        p = subprocess.run(["curl", "-sS", "--max-time", "10"] + list(args),
                           capture_output=True, text=True, timeout=20)
        return p.returncode, p.stdout, p.stderr

    def test_tls_sni_picks_the_certificate(self):
        for name, want in (("api.example.com", "CN = api.example.com"),
                           ("x.shop.example", "CN = *.shop.example"),
                           ("unknown.test", "CN = api.example.com")):
            p = subprocess.run(
                ["openssl", "s_client", "-connect",
                 "127.0.0.1:%d" % self.tls_port, "-servername", name],
                input="", capture_output=True, text=True, timeout=20)
            self.assertIn("subject=" + want, p.stdout, name)

    def test_https_http2_by_alpn_and_http11(self):
        ca = "%s" % self.a[0]
        rc, out, err = self.curl(
            "--http2", "--cacert", ca, "-w", "\n%{http_version}",
            "--resolve", "api.example.com:%d:127.0.0.1" % self.tls_port,
            "https://api.example.com:%d/hello" % self.tls_port)
        self.assertEqual(rc, 0, err)
        body, version = out.rsplit("\n", 1)
        self.assertEqual(version, "2")
        self.assertIn("hello", body.lower())
        rc, out, err = self.curl(
            "--http1.1", "--cacert", ca, "-w", "\n%{http_version}",
            "--resolve", "api.example.com:%d:127.0.0.1" % self.tls_port,
            "-H", "X-Request-Id: tls-1", "-D", "-",
            "https://api.example.com:%d/hello" % self.tls_port)
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.endswith("\n1.1"), out)
        self.assertIn("x-request-id: tls-1", out.lower())

    def test_h2c_prior_knowledge_on_the_plain_listener(self):
        rc, out, err = self.curl(
            "--http2-prior-knowledge", "-w", "\n%{http_version}",
            "http://127.0.0.1:%d/hello" % self.srv.gateway_port)
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.endswith("\n2"), out)
        # HTTP/1.1 still works on the same port
        self.assertEqual(self.srv.gw("GET", "/hello").status, 200)

    def test_grpc_call_keeps_its_trailers_end_to_end(self):
        data = os.path.join(self.dir, "req.bin")
        with open(data, "wb") as f:
            f.write(b"\x00\x00\x00\x00\x05hello")
        p = subprocess.run(
            ["nghttp", "-v", "-d", data,
             "-H", "content-type: application/grpc", "-H", "te: trailers",
             "http://127.0.0.1:%d/pkg.Greeter/Say" % self.srv.gateway_port],
            capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        self.assertIn(":status: 200", out)
        # nghttp prints a HEADERS frame's fields before the frame line: the
        # fields after the DATA frame are the trailers (END_STREAM)
        trailer = out[out.rindex("recv DATA frame"):]
        self.assertRegex(trailer, r"recv \(stream_id=\d+\) grpc-status: 0")
        self.assertRegex(trailer,
                         r"recv \(stream_id=\d+\) grpc-message: fine")
        self.assertIn("END_STREAM",
                      trailer[trailer.rindex("recv HEADERS frame"):])
        self.assertIn("\x05hello", out)      # the request, echoed

    def test_per_ip_connection_limit(self):
        socks = []
        try:
            for _ in range(20):
                s = socket.create_connection(
                    ("127.0.0.1", self.srv.gateway_port))
                socks.append(s)
                # answered: the server has accepted and counted it
                s.settimeout(5)
                s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 200"))
            extra = socket.create_connection(
                ("127.0.0.1", self.srv.gateway_port))
            extra.settimeout(5)
            extra.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            try:                                         # closed at once:
                got = extra.recv(100)                    # FIN, or RST as
            except ConnectionResetError:                 # the request was
                got = b""                                # never read
            self.assertEqual(got, b"")
            extra.close()
        finally:
            for s in socks:
                s.close()
        time.sleep(0.2)
        self.assertEqual(self.srv.gw("GET", "/hello").status, 200)
        m = self.srv.api("GET", "/metrics").body.decode()
        self.assertIn('kiban_http_connections_rejected_total{listener="gateway"'
                      ',reason="per_ip"}', m)


class IdleConnectionsTest(unittest.TestCase):
    """Memory stays bounded with thousands of idle keep-alive connections
    (each has sent one request and got its answer)."""
    N = 4000

    def setUp(self):
        import resource
        want = self.N + 1000                # the test's sockets + kiban's
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < want:
            hard = want                     # root may raise it
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        # under AddressSanitizer, freed blocks wait in a quarantine: off
        # here, so RSS shows what the server keeps, not what ASan holds
        env = {}
        if "ASAN_OPTIONS" in os.environ:
            env["ASAN_OPTIONS"] = (os.environ["ASAN_OPTIONS"] +
                                   ":quarantine_size_mb=0")
        self.srv = Server(args=("--gateway-workers", "1"), env=env).start()
        self.addCleanup(self.srv.cleanup)

    def rss_kib(self):
        with open("/proc/%d/status" % self.srv.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def test_idle_connections_cost_little(self):
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(50):                 # warm the allocator
            s = socket.create_connection(("127.0.0.1", self.srv.gateway_port))
            s.sendall(req)
            s.recv(4096)
            s.close()
        before = self.rss_kib()
        socks = []
        try:
            for _ in range(self.N):
                s = socket.create_connection(
                    ("127.0.0.1", self.srv.gateway_port))
                s.sendall(req)
                socks.append(s)
            for s in socks:
                s.settimeout(10)
                self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 200"))
            grown = self.rss_kib() - before
            # measured ≈ 1.1 KiB each; 4 KiB leaves room for allocator
            # slack but catches a per-connection buffer kept while idle
            print("idle connections: %d KiB for %d" % (grown, self.N))
            self.assertLess(grown, self.N * 4, "grew %d KiB" % grown)
            self.assertEqual(self.srv.gw("GET", "/healthz").status, 200)
        finally:
            for s in socks:
                s.close()
        self.srv.stop()


if __name__ == "__main__":
    main()
