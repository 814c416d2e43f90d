"""Admin API: auth, services CRUD, pagination, bad input, concurrency rules."""
import os
import stat
import threading
import unittest

from kiban import Server, ServerTest, main, service, wait_for

SVC = "/v1/projects/default/services"


class AuthTest(ServerTest):
    def test_token_file_created_private(self):
        path = os.path.join(self.srv.data_dir, "admin.token")
        mode = stat.S_IMODE(os.stat(path).st_mode)
        self.assertEqual(mode, 0o600)
        self.assertGreaterEqual(len(self.srv.token), 32)

    def test_missing_or_wrong_token_is_401_and_changes_nothing(self):
        for token in (None, "wrong-token-0123456789", ""):
            r = self.srv.api("POST", SVC + "?serviceId=a", service(instances=0),
                             token=token)
            self.assertError(r, 401, "UNAUTHENTICATED")
            self.assertIn("Bearer", r.header("WWW-Authenticate"))
        r = self.srv.api("GET", SVC)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json().get("services"), [])
        r = self.srv.api("GET", SVC, token="x" * 48)
        self.assertError(r, 401)
        r = self.srv.api("DELETE", SVC + "/a", token=None)
        self.assertError(r, 401)

    def test_healthz_and_metrics_need_no_token(self):
        r = self.srv.api("GET", "/healthz", token=None)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"status": "ok"})
        self.srv.api("GET", SVC)
        r = self.srv.api("GET", "/metrics", token=None)
        self.assertEqual(r.status, 200)
        text = r.body.decode()
        self.assertIn("process_resident_memory_bytes", text)
        self.assertIn('kiban_http_requests_total{listener="api",code="2xx"}', text)
        self.assertIn('kiban_http_request_duration_seconds_bucket{listener="api"',
                      text)

    def test_version(self):
        r = self.srv.api("GET", "/v1/version")
        self.assertEqual(r.status, 200)
        self.assertRegex(r.json()["version"], r"^\d+\.\d+\.\d+")


class ServicesTest(ServerTest):
    def test_crud(self):
        r = self.srv.api("POST", SVC + "?serviceId=web",
                         service(args=["--x"], env={"A": "1"}, instances=0))
        self.assertEqual(r.status, 200, r)
        created = r.json()
        self.assertEqual(created["name"], "projects/default/services/web")
        self.assertEqual(created["args"], ["--x"])
        self.assertEqual(created["env"], {"A": "1"})
        self.assertEqual(created["etag"], '"1"')
        for f in ("uid", "createTime", "updateTime"):
            self.assertIn(f, created)

        r = self.srv.api("GET", SVC + "/web")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["uid"], created["uid"])

        spec = service(env={"A": "2"}, instances=0)
        r = self.srv.api("PATCH", SVC + "/web", spec)
        self.assertEqual(r.status, 200, r)
        updated = r.json()
        self.assertEqual(updated["env"], {"A": "2"})
        self.assertNotIn("args", updated)          # full replace
        self.assertEqual(updated["etag"], '"2"')
        self.assertEqual(updated["uid"], created["uid"])
        self.assertEqual(updated["createTime"], created["createTime"])

        r = self.srv.api("DELETE", SVC + "/web")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {})
        self.assertError(self.srv.api("GET", SVC + "/web"), 404, "NOT_FOUND")
        self.assertError(self.srv.api("DELETE", SVC + "/web"), 404)
        self.assertError(self.srv.api("PATCH", SVC + "/web", spec), 404)

    def test_create_twice_conflicts_unless_same_request_id(self):
        r = self.srv.api("POST", SVC + "?serviceId=a&requestId=r1",
                         service(instances=0))
        self.assertEqual(r.status, 200)
        r2 = self.srv.api("POST", SVC + "?serviceId=a&requestId=r1",
                          service(instances=0))
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.json()["uid"], r.json()["uid"])
        r3 = self.srv.api("POST", SVC + "?serviceId=a", service(instances=0))
        self.assertError(r3, 409, "ALREADY_EXISTS")

    def test_pagination(self):
        names = ["svc-%02d" % i for i in range(23)]
        for n in reversed(names):
            r = self.srv.api("POST", SVC + "?serviceId=" + n,
                             service(instances=0))
            self.assertEqual(r.status, 200, r)
        seen, token, pages = [], None, 0
        while True:
            q = "?pageSize=10" + ("&pageToken=" + token if token else "")
            r = self.srv.api("GET", SVC + q)
            self.assertEqual(r.status, 200, r)
            body = r.json()
            self.assertLessEqual(len(body["services"]), 10)
            seen += [s["name"].rsplit("/", 1)[1] for s in body["services"]]
            pages += 1
            token = body.get("nextPageToken")
            if not token:
                break
        self.assertEqual(seen, names)
        self.assertEqual(pages, 3)
        self.assertError(self.srv.api("GET", SVC + "?pageSize=-1"), 400)
        self.assertError(self.srv.api("GET", SVC + "?pageSize=abc"), 400)
        self.assertError(self.srv.api("GET", SVC + "?pageToken=garbage!!"), 400)
        # Other projects are separate.
        r = self.srv.api("GET", "/v1/projects/other/services")
        self.assertEqual(r.json().get("services"), [])

    def test_bad_input(self):
        cases = [
            ("POST", SVC + "?serviceId=a", "{not json", "invalid JSON"),
            ("POST", SVC + "?serviceId=a", "[1,2]", "JSON object"),
            ("POST", SVC + "?serviceId=a", {"command": "x", "bogus": 1}, "bogus"),
            ("POST", SVC + "?serviceId=a", {"command": "x", "instances": "two"},
             "instances"),
            ("POST", SVC + "?serviceId=a", {"command": "x", "instances": 1000},
             "instances"),
            ("POST", SVC + "?serviceId=a", {"instances": 1}, "command"),
            ("POST", SVC + "?serviceId=a", {"command": "x", "env": {"A": 1}},
             "env"),
            ("POST", SVC + "?serviceId=a", {"command": "x", "args": "nope"},
             "args"),
            ("POST", SVC + "?serviceId=Bad_Name", service(), "serviceId"),
            ("POST", SVC, service(), "serviceId"),
            ("POST", "/v1/projects/Bad!/services?serviceId=a", service(),
             "project"),
            ("POST", SVC + "?serviceId=a", None, "body"),
        ]
        for method, path, body, needle in cases:
            r = self.srv.api(method, path, body)
            msg = self.assertError(r, 400, "INVALID_ARGUMENT")
            self.assertIn(needle, msg, (path, body))
        # Nothing was created by any of them.
        self.assertEqual(self.srv.api("GET", SVC).json().get("services"), [])

    def test_unknown_path_and_method(self):
        self.assertError(self.srv.api("GET", "/v1/nothing"), 404, "NOT_FOUND")
        r = self.srv.api("PUT", SVC)
        self.assertEqual(r.status, 405, r)
        self.assertIn("POST", r.header("Allow"))

    def test_etag_guards_updates(self):
        self.srv.api("POST", SVC + "?serviceId=e", service(instances=0))
        body = dict(service(instances=0), etag='"7"')
        self.assertError(self.srv.api("PATCH", SVC + "/e", body), 409, "ABORTED")
        body["etag"] = '"1"'
        r = self.srv.api("PATCH", SVC + "/e", body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["etag"], '"2"')
        self.assertError(self.srv.api("DELETE", SVC + '/e?etag="1"'), 409)
        self.assertEqual(self.srv.api("DELETE", SVC + '/e?etag="2"').status, 200)

    def test_update_mask_and_get_edit_put(self):
        self.srv.api("POST", SVC + "?serviceId=m",
                     service(args=["a"], env={"K": "V"}, instances=0))
        r = self.srv.api("PATCH", SVC + "/m?updateMask=env", {"env": {"K": "W"}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["env"], {"K": "W"})
        self.assertEqual(r.json()["args"], ["a"])
        # A resource read back can be sent back as it is.
        got = self.srv.api("GET", SVC + "/m").json()
        got["instances"] = 0
        r = self.srv.api("PATCH", SVC + "/m", got)
        self.assertEqual(r.status, 200, r)

    def test_validate_only_changes_nothing(self):
        r = self.srv.api("POST", SVC + "?serviceId=v&validateOnly=true",
                         service(instances=0))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["name"], "projects/default/services/v")
        self.assertError(self.srv.api("GET", SVC + "/v"), 404)
        r = self.srv.api("POST", SVC + "?serviceId=v&validateOnly=true",
                         {"command": 5})
        self.assertError(r, 400)

    def test_state_survives_restart(self):
        self.srv.api("POST", SVC + "?serviceId=keep", service(instances=0))
        self.srv.stop()
        self.srv.start()
        r = self.srv.api("GET", SVC + "/keep")
        self.assertEqual(r.status, 200, r)


class DurabilityTest(unittest.TestCase):
    def test_acknowledged_creates_survive_kill_9(self):
        """Clients create services as fast as they can while the server is
        killed with SIGKILL; every create that was answered 200 is there
        after a restart."""
        srv = Server().start()
        self.addCleanup(srv.cleanup)
        acked, lock, stop = [], threading.Lock(), threading.Event()

        def writer(w):
            i = 0
            while not stop.is_set():
                name = "w%d-%d" % (w, i)
                i += 1
                try:
                    r = srv.api("POST", SVC + "?serviceId=" + name,
                                service(instances=0))
                except OSError:
                    return
                if r.status == 200:
                    with lock:
                        acked.append(name)
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) >= 150, 60, 0.01,
                 what="150 acknowledged creates")
        srv.kill9()
        stop.set()
        for t in threads:
            t.join(30)
        srv.start()
        names, token = set(), None
        while True:
            q = "?pageSize=1000" + ("&pageToken=" + token if token else "")
            body = srv.api("GET", SVC + q).json()
            names |= {s["name"].rsplit("/", 1)[1] for s in body["services"]}
            token = body.get("nextPageToken")
            if not token:
                break
        missing = [n for n in acked if n not in names]
        self.assertEqual(missing, [])
        self.assertGreaterEqual(len(acked), 150)
        srv.stop()


if __name__ == "__main__":
    main()
