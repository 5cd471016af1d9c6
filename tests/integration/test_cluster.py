"""test_cluster: several gplqd nodes on one PostgreSQL database, on loopback, for real.

Two nodes ("a" and "b"), each a gplqd with its own data dir and one worker, share a database
on a real PostgreSQL 15 (pg_harness: started by this test, stopped at its end) and one blob dir
(the shared file system of a real cluster). Every job runs the real GPLQ pipeline on the demo
model and Fashion-MNIST, on training subsets small enough for CI:

- a job submitted to node a runs on node b's worker, and its events stream live from node a;
- node b killed (SIGKILL, its worker too) in the middle of stage 1: the lease runs out, node a
  takes the job back and resumes it from b's last checkpoint, to the bit-identical model;
- jobs submitted to both nodes at once each run exactly once, on both nodes' workers (six;
  twenty under `make chaos`, GPLQ_CLUSTER_JOBS);
- the database restarted under a running job: the worker reconnects and the job completes;
- a webhook receiver gets each event of a job once, in order, both nodes delivering.
"""
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gplqd_harness import Daemon, run_tests  # noqa: E402
from jobs_common import MANY_SMALL, RESUMABLE, TINY, claims, tensor_bytes, upload_demo, wait_stage1_step, worker_pid  # noqa: E402
import pg_harness  # noqa: E402
from test_teams import LOCAL_HOOKS, SECRET, Receiver, deliveries  # noqa: E402

# Long enough in stage 1 to be killed in it, short enough for CI: 8 steps, a checkpoint every 2.
# (About 2 s of stage 1 on 2 idle cores; the timeouts below are for a machine shared with
# others, where the same took minutes.)
SHORT_RESUMABLE = dict(RESUMABLE, train_subset=512, ckpt_every=2)
WAIT = 1800
# Jobs submitted at once to both nodes: enough to make them race for claims in CI; the long
# run (make chaos) submits twenty.
MANY_JOBS = int(os.environ.get("GPLQ_CLUSTER_JOBS") or 6)


class Cluster:
    """Nodes on one fresh database and one blob dir; the first node's admin token is every
    node's (tokens live in the database)."""

    def __init__(self, lease_ms=3000, config=None):
        self.pg = pg_harness.shared()
        self.url = self.pg.new_database("cluster")
        self.blob_dir = tempfile.mkdtemp(prefix="gplq-blobs-")
        self.lease_ms, self.config = lease_ms, config
        self.nodes = []
        self.token = None

    def node(self, name, workers=1):
        d = Daemon(workers=workers, db=self.url, config=self.config,
                   args=["--blob-dir", self.blob_dir, "--node-name", name,
                         "--lease-ms", str(self.lease_ms)])
        d.start()
        if self.token is None:
            self.token = d.token
        assert d.token in (None, self.token), "a second admin token at a later node's start"
        d.token = self.token
        self.nodes.append(d)
        return d

    def claims(self):
        """{job id: times claimed} over every node's workers."""
        out = {}
        for d in self.nodes:
            for k, v in claims(d).items():
                out[k] = out.get(k, 0) + v
        return out

    def lease_worker(self, job_id):
        rows = self.nodes[0].sql("SELECT lease_worker FROM jobs WHERE id = '%s'" % job_id)
        return rows[0][0] if rows else None

    def close(self):
        for d in self.nodes:
            d.close()
        shutil.rmtree(self.blob_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            for d in self.nodes:
                sys.stderr.write("--- node log (%s) ---\n%s\n" % (d.log_path, d.log_text()[-4000:]))
        self.close()
        return False


def kill_node(d):
    """The node dies at once, its worker with it, giving nothing back: the worker is stopped
    (SIGSTOP) before gplqd is SIGKILLed, so its parent-death SIGTERM cannot make it release
    the job, then SIGKILLed too."""
    pid = worker_pid(d)
    os.kill(pid, signal.SIGSTOP)
    d.kill()
    os.kill(pid, signal.SIGKILL)


def test_a_job_submitted_to_a_runs_on_b_and_streams_live_from_a():
    with Cluster() as c:
        a, b = c.node("a"), c.node("b")
        mid = upload_demo(a)
        # two jobs at once on two workers: whichever a's worker takes, b's takes the other
        j1 = a.create_job(mid, **SHORT_RESUMABLE).json()["id"]
        j2 = a.create_job(mid, **SHORT_RESUMABLE).json()["id"]
        a.wait_for(lambda: all(a.job(j)["state"] == "running" for j in (j1, j2)), timeout=120,
                   what="both jobs running")
        on_b = [j for j in (j1, j2) if (c.lease_worker(j) or "").startswith("b/")]
        assert len(on_b) == 1, [(j, c.lease_worker(j)) for j in (j1, j2)]
        j = on_b[0]
        # a's stream of b's job: events as they happen, then the end
        arrived = []
        events, ended, r = a.events(j, timeout=WAIT, on_event=lambda e: arrived.append(time.time()))
        assert r.status == 200 and ended, r
        states = [e["data"]["data"]["state"] for e in events if e["event"] == "state"]
        assert states == ["queued", "running", "succeeded"], states
        progress = [t for e, t in zip(events, arrived) if e["event"] == "progress"]
        assert len(progress) >= 3, [e["event"] for e in events]
        # live: progress reached a's client well before the job ended (not replayed at the end)
        assert arrived[-1] - progress[0] > 2.0, (progress[0], arrived[-1])
        job = a.job(j)
        assert job["state"] == "succeeded" and job["attempts"] == 1, job
        assert c.claims().get(j) == 1 and claims(b).get(j) == 1, c.claims()
        other = j2 if j == j1 else j1
        assert a.wait_for_state(other, ["succeeded", "failed"], timeout=WAIT)["state"] == "succeeded"
        # b's artifacts are served by a (the shared blob dir)
        r = a.get("/v1/jobs/%s/artifacts/model.q.safetensors" % j)
        assert r.status == 200 and len(r.body) > 1000, r


def test_node_b_killed_mid_stage1_resumes_on_a_to_the_same_model():
    with Cluster(lease_ms=3000) as c:
        b = c.node("b")
        mid = upload_demo(b)
        # the reference: the same spec, uninterrupted (on b)
        ref = b.wait_for_state(b.create_job(mid, **SHORT_RESUMABLE).json()["id"],
                               ["succeeded", "failed"], timeout=WAIT)
        assert ref["state"] == "succeeded", ref
        j = b.create_job(mid, **SHORT_RESUMABLE).json()["id"]
        b.wait_for(lambda: b.job(j)["state"] == "running", timeout=120, what="b's claim")
        a = c.node("a")  # now, while b holds the only job: a's worker waits idle
        wait_stage1_step(b, j, 3, timeout=WAIT)  # past b's checkpoint at step 2
        assert c.lease_worker(j).startswith("b/"), c.lease_worker(j)
        kill_node(b)
        # nobody gives it back: a's lease expiry does, and a's worker resumes it
        job = a.wait_for_state(j, ["succeeded", "failed"], timeout=WAIT)
        assert job["state"] == "succeeded", job
        assert job["attempts"] == 2, job
        resumed = [l for l in a.log_lines() if l.get("job") == j
                   and "resuming stage 1" in str(l.get("msg"))]
        assert resumed, "node a did not resume from node b's checkpoint"
        assert claims(a).get(j) == 1, claims(a)
        assert job["metrics"] == ref["metrics"], (job["metrics"], ref["metrics"])
        _, ta = tensor_bytes(a.get("/v1/jobs/%s/artifacts/model.q.safetensors" % ref["id"]).body)
        _, tb = tensor_bytes(a.get("/v1/jobs/%s/artifacts/model.q.safetensors" % j).body)
        assert ta == tb, "the resumed job's quantized model differs from the uninterrupted one"
        assert not os.path.exists(os.path.join(c.blob_dir, "jobs", j, "stage1.state"))


def test_many_jobs_submitted_to_both_nodes_each_run_once():
    with Cluster(lease_ms=15000) as c:
        a, b = c.node("a"), c.node("b")
        mid = upload_demo(a)
        ids, lock = [], threading.Lock()

        def submit(node, seeds):
            for s in seeds:
                r = node.create_job(mid, seed=s, **MANY_SMALL)
                assert r.status == 201, r
                with lock:
                    ids.append(r.json()["id"])

        ts = [threading.Thread(target=submit, args=(a, range(0, MANY_JOBS, 2))),
              threading.Thread(target=submit, args=(b, range(1, MANY_JOBS, 2)))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(ids) == MANY_JOBS
        jobs = [a.wait_for_state(i, ["succeeded", "failed", "canceled"], timeout=WAIT) for i in ids]
        assert all(j["state"] == "succeeded" and j["attempts"] == 1 for j in jobs), \
            [(j["id"], j["state"], j["attempts"], j["error"]) for j in jobs]
        got = c.claims()
        assert all(got.get(i) == 1 for i in ids), got
        assert claims(a) and claims(b), (claims(a), claims(b))  # both nodes' workers took part


def test_database_restarted_under_a_running_job():
    with Cluster(lease_ms=30000) as c:
        a = c.node("a")
        mid = upload_demo(a)
        j = a.create_job(mid, **SHORT_RESUMABLE).json()["id"]
        wait_stage1_step(a, j, 2, timeout=WAIT)
        c.pg.restart(down_s=1.0)
        # the node's own connections meet the restart too: the first requests after it may
        # fail once while they connect again

        def state():
            r = a.get("/v1/jobs/" + j)
            return r.json() if r.status == 200 and r.json()["state"] in ("succeeded", "failed") else None
        job = a.wait_for(state, timeout=WAIT, poll=0.5, what="the job's end")
        assert job["state"] == "succeeded", job
        assert job["attempts"] == 1, job  # the worker kept its lease through the restart
        lost = [l for l in a.log_lines() if "lost the connection" in str(l.get("msg", ""))]
        assert lost, "the restart went unnoticed: was the database restarted at all?"


def test_webhook_events_delivered_once_in_order_across_nodes():
    rec = Receiver(SECRET)
    with Cluster(lease_ms=15000, config=LOCAL_HOOKS) as c:
        a, b = c.node("a"), c.node("b")
        mid = upload_demo(a)
        hook = {"url": rec.url, "secret": SECRET, "progress_every_s": 1}
        jobs = [a.create_job(mid, webhook=hook, **TINY).json()["id"],
                b.create_job(mid, webhook=hook, **TINY).json()["id"]]
        for j in jobs:
            assert a.wait_for_state(j, ["succeeded", "failed"], timeout=WAIT)["state"] == "succeeded"
            a.wait_for(lambda: (lambda x: x if x and all(y["status"] == "delivered" for y in x)
                                and x[-1]["type"] == "job.succeeded" else None)(deliveries(a, j)),
                       timeout=60, what="every webhook event of %s delivered" % j)
        time.sleep(1.0)  # a duplicate, if any node sent one, would have come by now
        for j in jobs:
            got = [g["json"] for g in rec.got if g["json"]["job"]["id"] == j]
            ids = [g["id"] for g in got]
            assert len(ids) == len(set(ids)), "an event came twice: %s" % ids
            assert [x["id"] for x in deliveries(b, j)] == ids, (deliveries(b, j), ids)
            types = [g["type"] for g in got]
            assert types[0] == "job.started" and types[-1] == "job.succeeded", types
            assert "job.progress" in types, types
            assert all(x["created"] <= y["created"] for x, y in zip(got, got[1:])), got
        assert all(g["sig_ok"] for g in rec.got)
    rec.close()


if __name__ == "__main__":
    run_tests(globals())
