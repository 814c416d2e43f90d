"""Gateway to https and HTTP/2 backends through the real binary: h2c (gRPC
shape, trailers relayed), h2 over TLS, https HTTP/1.1 with a CA given by
--ca-file, and certificate failures answered 502."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from kiban import Server, ServerTest, free_port, main, raw, wait_for

GW = "/v1/projects/default/gateways"

PY_HTTPS = r"""
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def do_GET(self):
        body = b'secure hello'
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('X-Backend', 'py')
        self.end_headers()
        self.wfile.write(body)
srv = http.server.HTTPServer(('127.0.0.1', 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Backends:
    """nghttpd (h2c and TLS) and a python https server, with a certificate
    valid for the name localhost only."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kiban-h2-")
        self.key = os.path.join(self.dir, "key.pem")
        self.cert = os.path.join(self.dir, "cert.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", self.key,
             "-out", self.cert, "-days", "1", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost"],
            check=True, capture_output=True)
        www = os.path.join(self.dir, "www")
        os.mkdir(www)
        with open(os.path.join(www, "hello.txt"), "w") as f:
            f.write("hello over h2\n")
        self.procs = []
        self.h2c = free_port()
        self.spawn(["nghttpd", "--no-tls", "-a", "127.0.0.1", "-d", www,
                    "--echo-upload", "--no-content-length",
                    "--trailer=grpc-status: 0",
                    "--trailer=grpc-message: fine", str(self.h2c)])
        self.h2s = free_port()
        self.spawn(["nghttpd", "-a", "127.0.0.1", "-d", www,
                    "--no-content-length", "--trailer=grpc-status: 0",
                    str(self.h2s), self.key, self.cert])
        p = self.spawn([sys.executable, "-c", PY_HTTPS, self.cert, self.key],
                       stdout=subprocess.PIPE)
        self.py = int(p.stdout.readline())
        for port in (self.h2c, self.h2s, self.py):
            wait_for(lambda: listening(port), 10, what="backend %d" % port)

    def spawn(self, argv, stdout=subprocess.DEVNULL):
        p = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
            p.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def backend(address, **extra):
    b = {"address": address, "path_translation": "CONSTANT_ADDRESS"}
    b.update(extra)
    return b


def spec(be):
    paths = {
        "/h2c": {"get": {"x-google-backend": backend(
            "http://127.0.0.1:%d/hello.txt" % be.h2c, protocol="h2")}},
        "/svc.Echo/Say": {"post": {"x-google-backend": backend(
            "http://127.0.0.1:%d/svc.Echo/Say" % be.h2c, protocol="h2")}},
        "/h2s": {"get": {"x-google-backend": backend(
            "https://localhost:%d/hello.txt" % be.h2s, protocol="h2")}},
        "/secure": {"get": {"x-google-backend": backend(
            "https://localhost:%d/x" % be.py)}},
        # the certificate names localhost only: verification must fail
        "/mismatch": {"get": {"x-google-backend": backend(
            "https://127.0.0.1:%d/x" % be.py)}},
    }
    return {"openapi": {"openapi": "3.0.3",
                        "info": {"title": "t", "version": "1"},
                        "x-google-backend": backend(
                            "http://127.0.0.1:%d" % be.h2c),
                        "paths": paths}}


def chunked_trailers(resp):
    """Body and trailers of a raw HTTP/1.1 chunked response."""
    head, _, rest = resp.partition(b"\r\n\r\n")
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2:]
    trailers = {}
    for line in rest.split(b"\r\n"):
        if b":" in line:
            k, v = line.split(b":", 1)
            trailers[k.strip().lower().decode()] = v.strip().decode()
    return head, body, trailers


class H2BackendsTest(ServerTest):
    @classmethod
    def setUpClass(cls):
        cls.be = Backends()

    @classmethod
    def tearDownClass(cls):
        cls.be.stop()

    def setUp(self):
        self.srv = Server(args=("--ca-file", self.be.cert)).start()
        self.addCleanup(self.srv.cleanup)
        r = self.srv.api("POST", GW + "?gatewayId=h2", spec(self.be))
        self.assertEqual(r.status, 200, r)
        wait_for(lambda: self.srv.gw("GET", "/h2c").status == 200, 10,
                 what="the h2c backend behind the gateway")

    def grpc_call(self, path, body):
        req = (b"POST " + path.encode() + b" HTTP/1.1\r\n"
               b"Host: 127.0.0.1\r\nContent-Type: application/grpc\r\n"
               b"TE: trailers\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
        return raw(self.srv.gateway_port, req)

    def test_h2c_get(self):
        r = self.srv.gw("GET", "/h2c")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"hello over h2\n")

    def test_grpc_trailers_relayed(self):
        msg = b"\x00\x00\x00\x00\x05hello"
        resp = self.grpc_call("/svc.Echo/Say", msg)
        head, body, trailers = chunked_trailers(resp)
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        self.assertEqual(body, msg)
        self.assertEqual(trailers.get("grpc-status"), "0", resp)
        self.assertEqual(trailers.get("grpc-message"), "fine", resp)

    def test_h2_over_tls(self):
        for _ in range(3):          # reused connection
            r = self.srv.gw("GET", "/h2s")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, b"hello over h2\n")

    def test_https_with_ca_file(self):
        r = self.srv.gw("GET", "/secure")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"secure hello")
        self.assertEqual(r.header("X-Backend"), "py")

    def test_certificate_mismatch_is_502(self):
        r = self.srv.gw("GET", "/mismatch")
        self.assertEqual(r.status, 502, r)
        wait_for(lambda: "upstream tls failure" in self.srv.logs(), 5,
                 what="the certificate failure in the log")


if __name__ == "__main__":
    main()
