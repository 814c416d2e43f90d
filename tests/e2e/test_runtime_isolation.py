"""Instances through the real server: the unprivileged user, memory limits
that hold, scale to zero with a cold start through the gateway, a crash
loop that is reported and keeps traffic on the last good revision."""
import os

from kiban import HELLO, ServerTest, main, wait_for

SVC = "/v1/projects/default/services"


def uid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


class IsolationTest(ServerTest):
    server_args = ("--run-as", "nobody")

    def create(self, name, spec):
        r = self.srv.api("POST", SVC + "?serviceId=" + name, spec)
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def revision_status(self, name):
        r = self.srv.api("GET", SVC + "/" + name + "/revisions")
        self.assertEqual(r.status, 200, r.body)
        return r.json()["revisions"][0]

    def hello(self, name):
        return self.srv.gw("GET", "/hello",
                           headers={"Host": "%s.localhost" % name})

    def test_instances_run_as_nobody(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to switch users")
        self.create("who", {"command": HELLO, "minInstances": 1})
        r = self.hello("who")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(uid_of(r.json()["pid"]), 65534)
        st = self.revision_status("who")["status"]
        self.assertEqual(st["isolation"]["runAs"], "nobody")

    def test_memory_limit_holds(self):
        # dd allocates its 200 MiB block before it copies anything: under a
        # 64 MiB limit it dies (cgroup OOM kill, or a failed allocation
        # with RLIMIT_AS), so the service never starts.
        hog = "dd if=/dev/zero of=/dev/null bs=200M count=1 && exec \"$0\""
        self.create("hog", {"command": "/bin/sh", "args": ["-c", hog, HELLO],
                            "resources": {"memory": "64Mi"}})

        def failed():
            c = self.revision_status("hog")["status"]["conditions"][0]
            return c["status"] == "False" and c
        cond = wait_for(failed, 30, what="the revision to fail")
        self.assertEqual(cond["reason"], "CrashLoopBackOff", cond)
        r = self.hello("hog")
        self.assertEqual(r.status, 503, r.body)

        # The same command with room to spare serves.
        self.create("roomy", {"command": "/bin/sh",
                              "args": ["-c", hog, HELLO],
                              "resources": {"memory": "1Gi"}})
        wait_for(lambda: self.hello("roomy").status == 200, 30,
                 what="the roomy service to serve")

    def test_scale_to_zero_and_cold_start(self):
        self.create("nap", {"command": HELLO, "scaleDownDelay": "300ms"})
        self.assertEqual(self.hello("nap").status, 200)

        def instances():
            st = self.srv.api("GET", SVC + "/nap").json()["status"]
            return len(st["instances"])
        wait_for(lambda: instances() == 0, 15, what="scale to zero")
        r = self.hello("nap")
        self.assertEqual(r.status, 200, r.body)
        st = self.revision_status("nap")["status"]
        self.assertGreaterEqual(st["coldStarts"], 1)

    def test_crash_loop_keeps_traffic_on_the_good_revision(self):
        self.create("rel", {"command": HELLO, "minInstances": 1,
                            "env": {"GREETING": "good"}})
        self.assertEqual(self.hello("rel").json()["message"], "good")
        # A broken deploy: LATEST stays on the last ready revision.
        r = self.srv.api("PATCH", SVC + "/rel",
                         {"command": "/bin/sh",
                          "args": ["-c", "echo boom >&2; exit 1"]})
        self.assertEqual(r.status, 200, r.body)

        def failed():
            st = self.srv.api("GET", SVC + "/rel").json()["status"]
            c = st["conditions"][0]
            return c["status"] == "False" and st
        st = wait_for(failed, 30, what="the new revision to fail")
        self.assertEqual(st["conditions"][0]["reason"], "RevisionFailed")
        self.assertIn("boom", st["conditions"][0]["message"])
        self.assertTrue(st["latestCreatedRevisionName"].startswith("rel-00002"))
        self.assertTrue(st["latestReadyRevisionName"].startswith("rel-00001"))
        for _ in range(20):
            self.assertEqual(self.hello("rel").json()["message"], "good")


if __name__ == "__main__":
    main()
