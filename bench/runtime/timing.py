#!/usr/bin/env python3
"""timing.py - the clocks of bench/runtime/*.sh (python3 stdlib only).

Times what a shell loop of curl calls would blur (a fork per poll): a
process's own start, a cold start through the gateway, a deploy until the
new revision answers.  Prints one line of milliseconds per round.

  timing.py coldstart HELLO_BIN API TOKEN_FILE GW_PORT HOST SERVICE N
      per round: "DIRECT COLD" — DIRECT: spawn HELLO_BIN with PORT and poll
      GET /hello until it answers 200; COLD: wait until SERVICE has no
      instance, then one GET /hello with Host: HOST through the gateway
  timing.py deploy KIBAN API TOKEN_FILE GW_PORT SERVICE DOMAIN FIRST N [FLAG…]
      per round i (FIRST…FIRST+N-1): "CLI TAG SPLIT" — from before
      `kiban deploy SERVICE --env GREETING=vI --tag tI FLAG…` starts until it
      exits, until TAG---SERVICE.DOMAIN answers GREETING vI, and (0 when the
      flags hold --no-traffic) until SERVICE.DOMAIN does
  timing.py zero API TOKEN_FILE SERVICE [REVISION]
      wait until SERVICE (or only its REVISION) has no instance (30 s at most)
  timing.py revision API TOKEN_FILE SERVICE
      print the name of SERVICE's newest revision
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import time

POLL = 0.001            # s between polls of something that is not there yet
HANG = 30.0             # s: anything slower is a failure, not a figure


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(port, path, host=None, headers=None, timeout=HANG):
    """One GET on a fresh connection → (status, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = dict(headers or {})
        if host:
            h["Host"] = host
        c.request("GET", path, headers=h)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def ms_since(t0):
    return (time.monotonic() - t0) * 1000.0


class Api:
    def __init__(self, url, token_file):
        u = url.split("://", 1)[-1]
        host, _, port = u.partition(":")
        self.port = int(port.split("/")[0])
        with open(token_file) as f:
            self.auth = {"Authorization": "Bearer " + f.read().strip()}

    def service(self, name):
        st, body = get(self.port, "/v1/projects/default/services/" + name,
                       headers=self.auth)
        if st != 200:
            raise SystemExit("timing.py: GET service %s: %d %s"
                             % (name, st, body[:200]))
        return json.loads(body)

    def wait_zero(self, name, revision=None):
        deadline = time.monotonic() + HANG
        while time.monotonic() < deadline:
            status = self.service(name).get("status", {})
            revs = [r for r in status.get("revisions", [])
                    if revision is None or r.get("name") == revision]
            if (revision is not None or not status.get("instances")) and all(
                    r.get("instances", 0) == 0 for r in revs):
                return
            time.sleep(0.02)
        raise SystemExit("timing.py: %s never went to zero instances" % name)


def direct_start(binary):
    """ms from spawning the service with PORT until GET /hello answers."""
    port = free_port()
    env = dict(os.environ, PORT=str(port))
    t0 = time.monotonic()
    p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                st, _ = get(port, "/hello", timeout=HANG)
                if st == 200:
                    return ms_since(t0)
            except ConnectionRefusedError:
                pass
            if ms_since(t0) > HANG * 1000:
                raise SystemExit("timing.py: %s never answered" % binary)
            time.sleep(POLL)
    finally:
        p.terminate()
        p.wait()


def coldstart(binary, api_url, token_file, gw_port, host, service, n):
    api = Api(api_url, token_file)
    for _ in range(int(n)):
        direct = direct_start(binary)
        api.wait_zero(service)
        t0 = time.monotonic()
        st, body = get(int(gw_port), "/hello", host=host)
        cold = ms_since(t0)
        if st != 200:
            raise SystemExit("timing.py: cold request: %d %s"
                             % (st, body[:200]))
        print("%.3f %.3f" % (direct, cold), flush=True)


def wait_greeting(gw_port, host, greeting, t0):
    while True:
        try:
            st, body = get(gw_port, "/hello", host=host)
            if st == 200 and json.loads(body).get("message") == greeting:
                return ms_since(t0)
        except (OSError, ValueError):
            pass
        if ms_since(t0) > HANG * 1000:
            raise SystemExit("timing.py: %s never answered %s"
                             % (host, greeting))
        time.sleep(POLL)


def deploy(kiban, api_url, token_file, gw_port, service, domain, first, n,
           *flags):
    env = dict(os.environ, KIBAN_API=api_url)
    gw_port = int(gw_port)
    for i in range(int(first), int(first) + int(n)):
        greeting, tag = "v%d" % i, "t%d" % i
        cmd = [kiban, "deploy", service, "--env", "GREETING=" + greeting,
               "--tag", tag, "--token-file", token_file] + list(flags)
        t0 = time.monotonic()
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        cli = ms_since(t0)
        if r.returncode != 0:
            raise SystemExit("timing.py: %s: %s"
                             % (" ".join(cmd), r.stdout.decode()[-500:]))
        at_tag = wait_greeting(gw_port, "%s---%s.%s" % (tag, service, domain),
                               greeting, t0)
        split = 0.0
        if "--no-traffic" not in flags:
            split = wait_greeting(gw_port, "%s.%s" % (service, domain),
                                  greeting, t0)
        print("%.3f %.3f %.3f" % (cli, at_tag, split), flush=True)


def main(argv):
    cmds = {"coldstart": (coldstart, 7), "deploy": (deploy, 8),
            "zero": (lambda a, t, s, r=None: Api(a, t).wait_zero(s, r), 3),
            "revision": (lambda a, t, s: print(
                Api(a, t).service(s)["revisions"][-1]["name"]), 3)}
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 < cmds[argv[1]][1]:
        sys.exit(__doc__)
    fn, _ = cmds[argv[1]]
    fn(*argv[2:])


if __name__ == "__main__":
    main(sys.argv)
