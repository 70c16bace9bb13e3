#!/usr/bin/env python3
"""A real Prometheus scrape of a live broker and worker (issue 7, item 5).

Starts, on loopback, the real conveyord (TLS and tokens made by
deploy/gen-certs.sh, a journal in a temporary directory) and a real
conveyor-worker, then Debian's `prometheus` scraping both every second with
deploy/prometheus/alerts.yml loaded. Runs a small workload with the conveyor
CLI and checks through Prometheus's HTTP API that:

  - both targets are up;
  - the expected series exist with the right values (submitted, dispatched,
    finished by outcome, retried, rejected, queue gauges, histograms' counts,
    the worker's counters and slots, build info, gRPC and journal metrics);
  - every expression of the Grafana dashboard (deploy/grafana/dashboards) and
    of the alert rules evaluates without error, and every dashboard
    expression returns data;
  - every rule is healthy, the failure-ratio alert is active for the queue
    whose tasks failed, and the alerts that must stay quiet do.

Before that, promtool checks the rules, runs their unit tests
(alerts_test.yml) and checks the Compose Prometheus config and the generated
one. At the end both daemons get SIGTERM and must drain and exit 0.

Standard library only. Exit 0 on success; 1 with the reasons otherwise.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

QUEUE = "scrape"
NOOP_TASKS = 20           # succeed
PERMANENT_FAILURES = 2    # `fail` with "permanent:": DEAD after one attempt
RETRIED_FAILURES = 1      # `fail`, --max-attempts 2: one retry, then DEAD
WORKER_SLOTS = 4
MAX_PAYLOAD = 1024        # the broker's --max-payload-bytes; one submit exceeds it

# Alerts that must not even be pending after the workload.
QUIET_ALERTS = {
    "ConveyorNoWorker", "ConveyorReadyTaskOlderThanSLO", "ConveyorLeasesExpiring",
    "ConveyorQueueNearCapacity", "ConveyorSubmitsRejected", "ConveyorWorkerDisconnected",
    "ConveyorBrokerDown",
}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def log(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def read_file(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


class Procs:
    """Processes started by the test; each one killed at the end if still running."""

    def __init__(self, work):
        self.work = work
        self.procs = {}

    def start(self, name, argv):
        log_path = os.path.join(self.work, name + ".log")
        f = open(log_path, "w")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        f.close()
        self.procs[name] = (p, log_path)
        return p

    def log_tail(self, name, lines=30):
        return "\n".join(read_file(self.procs[name][1]).splitlines()[-lines:])

    def check_alive(self, name):
        p, _ = self.procs[name]
        if p.poll() is not None:
            raise RuntimeError("%s exited with %s:\n%s" % (name, p.returncode, self.log_tail(name)))

    def stop(self, name, timeout):
        """SIGTERM, then the exit code (None if it had to be killed)."""
        p, _ = self.procs[name]
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return None

    def kill_all(self):
        for p, _ in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


class Prometheus:
    def __init__(self, port):
        self.base = "http://127.0.0.1:%d" % port

    def get(self, path, params=None, timeout=5):
        url = self.base + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def api(self, path, params=None):
        status, body = self.get(path, params)
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            raise RuntimeError("%s %s: HTTP %d %s: %s" % (
                path, params, status, doc.get("errorType", ""), doc.get("error", body[:300])))
        return doc["data"]

    def query(self, expr):
        """(error or None, result list) of an instant query."""
        status, body = self.get("/api/v1/query", {"query": expr})
        try:
            doc = json.loads(body)
        except ValueError:
            return "HTTP %d: %s" % (status, body[:300]), []
        if status != 200 or doc.get("status") != "success":
            return "HTTP %d %s: %s" % (status, doc.get("errorType", ""), doc.get("error", "")), []
        data = doc["data"]
        if data["resultType"] == "scalar":
            return None, [{"metric": {}, "value": data["result"]}]
        return None, data["result"]

    def scalar(self, expr):
        """The value of a one-series query, None when it has no series."""
        err, result = self.query(expr)
        if err:
            raise RuntimeError("%s: %s" % (expr, err))
        if not result:
            return None
        if len(result) != 1:
            raise RuntimeError("%s: %d series, expected one" % (expr, len(result)))
        return float(result[0]["value"][1])


def run(argv, check=True, input=None, timeout=60, env=None):
    r = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout,
                       env=env)
    if check and r.returncode != 0:
        raise RuntimeError("%s exited %d:\n%s%s" % (" ".join(argv), r.returncode, r.stdout, r.stderr))
    return r


# ───────────────────────────── promtool ─────────────────────────────

def promtool_checks(args, config_path):
    """Checks the rules, runs their unit tests, checks both configs. The number of rules."""
    alerts = os.path.join(args.deploy, "prometheus", "alerts.yml")
    r = run([args.promtool, "check", "rules", alerts], check=False)
    log(r.stdout.strip())
    if r.returncode != 0:
        fail("promtool check rules %s:\n%s%s" % (alerts, r.stdout, r.stderr))
    m = re.search(r"SUCCESS: (\d+) rules found", r.stdout)
    rule_count = int(m.group(1)) if m else None

    tests = os.path.join(args.deploy, "prometheus", "alerts_test.yml")
    r = run([args.promtool, "test", "rules", tests], check=False)
    log(r.stdout.strip())
    if r.returncode != 0:
        fail("promtool test rules %s:\n%s%s" % (tests, r.stdout, r.stderr))

    for cfg in (os.path.join(args.deploy, "prometheus", "prometheus.yml"), config_path):
        r = run([args.promtool, "check", "config", cfg], check=False)
        if r.returncode != 0:
            fail("promtool check config %s:\n%s%s" % (cfg, r.stdout, r.stderr))
        else:
            log("promtool check config %s: ok" % os.path.basename(cfg))
    return rule_count


# ───────────────────────────── the system ─────────────────────────────

def start_broker(args, procs, secrets):
    port_file = os.path.join(args.work, "broker.port")
    procs.start("conveyord", [
        args.conveyord, "--listen=127.0.0.1:0", "--port-file=" + port_file,
        "--metrics-addr=127.0.0.1:0", "--data-dir=" + os.path.join(args.work, "data"),
        "--tls-cert=" + os.path.join(secrets, "broker.crt"),
        "--tls-key=" + os.path.join(secrets, "broker.key"),
        "--auth-tokens=" + os.path.join(secrets, "tokens"),
        "--max-payload-bytes=%d" % MAX_PAYLOAD, "--drain-grace=5s",
    ])

    def ready():
        procs.check_alive("conveyord")
        return read_file(port_file).strip()
    port = int(wait_for(ready, 30, "conveyord's port file"))
    # conveyord has no metrics port file: it logs the port it bound in the
    # "listening" line, written before the port file.
    metrics_port = None
    for line in read_file(procs.procs["conveyord"][1]).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg") == "listening" and "metrics_port" in entry:
            metrics_port = int(entry["metrics_port"])
    if not metrics_port:
        raise RuntimeError("conveyord did not log its metrics port:\n" + procs.log_tail("conveyord"))
    return port, metrics_port


def start_worker(args, procs, secrets, broker_port):
    port_file = os.path.join(args.work, "worker.metrics.port")
    procs.start("conveyor-worker", [
        args.worker, "--broker=127.0.0.1:%d" % broker_port, "--queue=" + QUEUE,
        "--concurrency=%d" % WORKER_SLOTS, "--grace=5s",
        "--metrics-addr=127.0.0.1:0", "--metrics-port-file=" + port_file,
        "--tls-ca=" + os.path.join(secrets, "ca.crt"),
        "--token-file=" + os.path.join(secrets, "worker.token"),
    ])

    def ready():
        procs.check_alive("conveyor-worker")
        return read_file(port_file).strip()
    return int(wait_for(ready, 30, "conveyor-worker's metrics port file"))


def write_prometheus_config(args, broker_metrics, worker_metrics):
    alerts = os.path.abspath(os.path.join(args.deploy, "prometheus", "alerts.yml"))
    path = os.path.join(args.work, "prometheus.yml")
    with open(path, "w") as f:
        f.write("""# Generated by tests/deploy/scrape_test.py
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: conveyord
    static_configs:
      - targets: ["127.0.0.1:%d"]
  - job_name: conveyor-worker
    static_configs:
      - targets: ["127.0.0.1:%d"]
""" % (json.dumps(alerts), broker_metrics, worker_metrics))
    return path


def start_prometheus(args, procs, config_path):
    """Starts it on a free loopback port (a few tries: the port may be taken
    between the probe and the bind). Its client."""
    for attempt in range(3):
        port = free_port()
        name = "prometheus" if attempt == 0 else "prometheus%d" % attempt
        storage = os.path.join(args.work, "tsdb%d" % attempt)
        procs.start(name, [
            args.prometheus, "--config.file=" + config_path,
            "--storage.tsdb.path=" + storage,
            "--web.listen-address=127.0.0.1:%d" % port,
            "--storage.tsdb.retention.time=1h", "--log.level=info",
        ])
        prom = Prometheus(port)

        def ready():
            if procs.procs[name][0].poll() is not None:
                return "exited"
            try:
                return "ready" if prom.get("/-/ready", timeout=1)[0] == 200 else None
            except OSError:
                return None
        state = wait_for(ready, 60, "prometheus /-/ready", interval=0.2)
        if state == "ready":
            procs.procs["prometheus"] = procs.procs[name]
            return prom
        log("prometheus exited (port %d taken?), retrying:\n%s" % (port, procs.log_tail(name, 5)))
    raise RuntimeError("prometheus did not start")


# ───────────────────────────── workload ─────────────────────────────

class Cli:
    def __init__(self, args, secrets, broker_port):
        self.base = [args.cli, "--addr=127.0.0.1:%d" % broker_port,
                     "--tls-ca=" + os.path.join(secrets, "ca.crt"),
                     "--token-file=" + os.path.join(secrets, "admin.token")]

    def __call__(self, *argv, check=True, input=None):
        return run(self.base + list(argv), check=check, input=input)

    def submit(self, task_type, payload, *flags):
        return self("submit", "--queue", QUEUE, "--type", task_type, *flags, payload).stdout.strip()

    def stats(self):
        return json.loads(self("-o", "json", "queue", "get", QUEUE).stdout)["stats"]


def wait_ended(cli, succeeded, dead):
    def done():
        s = cli.stats()
        return int(s.get("succeeded", 0)) == succeeded and int(s.get("dead", 0)) == dead
    wait_for(done, 30, "%d succeeded and %d dead tasks" % (succeeded, dead), interval=0.2)


def workload(cli, prom):
    """Two phases, so that every finished_total series the failure-ratio
    alert reads has a sample before its last increase (a counter series
    that appears with its final value shows no rate)."""
    cli("queue", "create", QUEUE, "--capacity", "1000", "--initial-backoff", "100ms",
        "--max-backoff", "100ms")
    cli.submit("noop", "warm-up")
    cli.submit("fail", "permanent: warm-up")
    wait_ended(cli, 1, 1)
    # The broker exports every outcome at 0 from the queue's first event.
    wait_for(lambda: prom.scalar('count(conveyor_tasks_finished_total{queue="%s"})' % QUEUE) == 5
             and prom.scalar('sum(conveyor_tasks_finished_total{queue="%s",'
                             'outcome=~"succeeded|dead"})' % QUEUE) == 2,
             20, "the warm-up tasks in finished_total in Prometheus", interval=0.2)

    for i in range(NOOP_TASKS - 1):
        cli.submit("noop", "task %d" % i)
    for i in range(PERMANENT_FAILURES - 1):
        cli.submit("fail", "permanent: task %d" % i)
    for i in range(RETRIED_FAILURES):
        cli.submit("fail", "retryable %d" % i, "--max-attempts", "2")
    # Over --max-payload-bytes: INVALID_ARGUMENT (exit 65), counted as rejected.
    r = cli("submit", "--queue", QUEUE, "--type", "noop", "-", check=False,
            input="x" * (MAX_PAYLOAD + 100))
    if r.returncode != 65:
        fail("an oversized submit exited %d, expected 65: %s" % (r.returncode, r.stderr.strip()))
    wait_ended(cli, NOOP_TASKS, PERMANENT_FAILURES + RETRIED_FAILURES)


# ───────────────────────────── checks ─────────────────────────────

def expected_series():
    submitted = NOOP_TASKS + PERMANENT_FAILURES + RETRIED_FAILURES
    attempts = NOOP_TASKS + PERMANENT_FAILURES + 2 * RETRIED_FAILURES
    dead = PERMANENT_FAILURES + RETRIED_FAILURES
    q = 'queue="%s"' % QUEUE
    exact = lambda v: (lambda x: x == v, "== %g" % v)
    positive = (lambda x: x > 0, "> 0")
    at_least = lambda v: (lambda x: x >= v, ">= %g" % v)
    return [
        ('up{job="conveyord"}', exact(1)),
        ('up{job="conveyor-worker"}', exact(1)),
        # Broker counters.
        ('sum(conveyor_tasks_submitted_total{%s})' % q, exact(submitted)),
        ('sum(conveyor_tasks_dispatched_total{%s})' % q, exact(attempts)),
        ('sum(conveyor_tasks_finished_total{%s,outcome="succeeded"})' % q, exact(NOOP_TASKS)),
        ('sum(conveyor_tasks_finished_total{%s,outcome="dead"})' % q, exact(dead)),
        ('sum(conveyor_tasks_finished_total{%s})' % q, exact(submitted)),
        ('sum(conveyor_tasks_retried_total{%s})' % q, exact(RETRIED_FAILURES)),
        ('sum(conveyor_leases_expired_total{%s})' % q, exact(0)),
        ('sum(conveyor_tasks_rejected_total{reason="invalid"})', exact(1)),
        # Broker histograms: one wait per task (submit to first lease), one
        # run per task that ran to its end.
        ('sum(conveyor_task_wait_seconds_count{%s})' % q, exact(submitted)),
        ('sum(conveyor_task_run_seconds_count{%s})' % q, exact(submitted)),
        ('sum(conveyor_task_wait_seconds_bucket{%s,le="+Inf"})' % q, exact(submitted)),
        # Queue gauges.
        ('sum(conveyor_queue_tasks{%s,state="succeeded"})' % q, exact(NOOP_TASKS)),
        ('sum(conveyor_queue_tasks{%s,state="dead"})' % q, exact(dead)),
        ('sum(conveyor_queue_tasks{%s,state=~"scheduled|ready|running"})' % q, exact(0)),
        ('count(conveyor_queue_tasks{%s})' % q, exact(8)),
        ('sum(conveyor_queue_capacity{%s})' % q, exact(1000)),
        ('sum(conveyor_queue_paused{%s})' % q, exact(0)),
        ('sum(conveyor_queue_oldest_ready_age_seconds{%s})' % q, exact(0)),
        ('sum(conveyor_tasks_blocked{%s})' % q, exact(0)),
        ('count(conveyor_tasks_blocked{%s})' % q, exact(5)),
        ('sum(conveyor_workers_connected{%s})' % q, exact(1)),
        ('sum(conveyor_queue_waiting_submits{%s})' % q, exact(0)),
        # gRPC and journal.
        ('sum(grpc_server_handled_total{grpc_service="conveyor.v1.TaskService",'
         'grpc_method="Submit",grpc_code="OK"})', exact(submitted)),
        ('sum(grpc_server_handled_total{grpc_service="conveyor.v1.TaskService",'
         'grpc_method="Submit",grpc_code="INVALID_ARGUMENT"})', exact(1)),
        ('sum(grpc_server_handling_seconds_count{grpc_method="Submit"})', exact(submitted + 1)),
        # Long-polls stay out of the latency histogram.
        ('absent(grpc_server_handling_seconds_count{grpc_method="Lease"})', exact(1)),
        ('sum(grpc_server_handled_total{grpc_method="Lease",grpc_code="OK"})', at_least(1)),
        ('conveyor_journal_bytes', positive),
        ('conveyor_journal_written_bytes_total', positive),
        ('conveyor_journal_fsync_seconds_count', positive),
        ('conveyor_build_info{job="conveyord",component="broker"}', exact(1)),
        # Worker.
        ('sum(conveyor_worker_tasks_total{%s,outcome="succeeded"})' % q, exact(NOOP_TASKS)),
        ('sum(conveyor_worker_tasks_total{%s,outcome="failed_permanent"})' % q,
         exact(PERMANENT_FAILURES)),
        ('sum(conveyor_worker_tasks_total{%s,outcome="failed"})' % q, exact(2 * RETRIED_FAILURES)),
        ('sum(conveyor_worker_tasks_total{%s})' % q, exact(attempts)),
        ('sum(conveyor_worker_task_duration_seconds_count{%s})' % q, exact(attempts)),
        ('conveyor_worker_slots{state="free"}', exact(WORKER_SLOTS)),
        ('conveyor_worker_slots{state="busy"}', exact(0)),
        ('conveyor_worker_connected', exact(1)),
        ('conveyor_worker_draining', exact(0)),
        ('sum(conveyor_worker_polls_total{result="tasks"})', at_least(1)),
        ('sum(conveyor_worker_polls_total{result="error"})', exact(0)),
        ('conveyor_build_info{job="conveyor-worker",component="worker"}', exact(1)),
    ]


def check_targets(prom):
    # A target's first scrape can come seconds after Prometheus says it is
    # ready (seen: the worker still "unknown", never scraped, 6 s later), so
    # wait until both are up, then check what the last answer says.
    def active():
        targets = prom.api("/api/v1/targets", {"state": "active"})["activeTargets"]
        return {t["labels"]["job"]: t for t in targets}
    deadline = time.monotonic() + 20
    while True:
        jobs = active()
        if all(jobs.get(j, {}).get("health") == "up" for j in ("conveyord", "conveyor-worker")) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for job in ("conveyord", "conveyor-worker"):
        t = jobs.get(job)
        if t is None:
            fail("no active target for job %s" % job)
        elif t["health"] != "up":
            fail("target %s is %s: %s" % (job, t["health"], t.get("lastError")))
    log("targets: %s" % ", ".join("%s %s" % (j, t["health"]) for j, t in sorted(jobs.items())))


def check_series(prom):
    checks = expected_series()

    def values():
        out = []
        for expr, (ok, want) in checks:
            v = prom.scalar(expr)
            out.append((expr, want, v, v is not None and ok(v)))
        return out
    # A scrape and a rule evaluation every second: wait until every value has
    # arrived (or a while has passed), then report what is still wrong.
    deadline = time.monotonic() + 20
    while True:
        got = values()
        if all(good for _, _, _, good in got) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for expr, want, v, good in got:
        if not good:
            fail("%s = %s, expected %s" % (expr, "no series" if v is None else "%g" % v, want))
    log("series: %d of %d as expected" % (sum(g for *_, g in got), len(got)))


def dashboard_exprs(path):
    """(where, expr) of every query in the dashboard, Grafana's variables
    replaced by what they stand for with every queue selected."""
    with open(path) as f:
        dash = json.load(f)
    out = []

    def substitute(expr):
        expr = re.sub(r"\$__rate_interval|\$\{__rate_interval\}|\$__interval|\$\{__interval\}",
                      "1m", expr)
        expr = re.sub(r"\$\{queue(:[a-z]+)?\}|\$queue\b", ".*", expr)
        if "$" in expr:
            raise RuntimeError("dashboard expression with an unknown variable: " + expr)
        return expr

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append(("panel %r %s" % (p.get("title"), t.get("refId")),
                                substitute(t["expr"])))
            walk(p.get("panels", []))
    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", q or "")
        if m:  # Grafana's label_values(SELECTOR, LABEL): the same as this PromQL
            out.append(("variable %s" % v["name"], "group by (%s) (%s)" % (m.group(2), m.group(1))))
        elif q:
            out.append(("variable %s" % v["name"], substitute(q)))
    return out


def check_dashboard(prom, path):
    exprs = dashboard_exprs(path)
    empty = []
    for where, expr in exprs:
        err, result = prom.query(expr)
        if err:
            fail("dashboard %s: %s: %s" % (where, expr, err))
        elif not result:
            empty.append((where, expr))
    # Rates need two samples in their window: give the last scrapes a moment.
    if empty:
        time.sleep(3)
        for where, expr in empty:
            err, result = prom.query(expr)
            if err or not result:
                fail("dashboard %s returns no data: %s" % (where, expr))
    log("dashboard: %d expressions evaluated" % len(exprs))


def check_rules(prom, rule_count):
    def evaluated():
        groups = prom.api("/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(not r.get("lastEvaluation", "").startswith("0001-") for r in rules):
            return rules
        return None
    rules = wait_for(evaluated, 20, "every rule evaluated at least once", interval=0.5)
    if rule_count is not None and len(rules) != rule_count:
        fail("Prometheus loaded %d rules; promtool found %d" % (len(rules), rule_count))
    for r in rules:
        if r.get("health") != "ok":
            fail("rule %s: health %s: %s" % (r["name"], r.get("health"), r.get("lastError")))
        err, _ = prom.query(r["query"])
        if err:
            fail("rule %s: %s: %s" % (r["name"], r["query"], err))
    log("rules: %d loaded, healthy and queryable" % len(rules))


def check_alerts(prom):
    # The failure ratio of queue `scrape` (dead / ended, over 10 minutes) is
    # well above 5%: its alert must be pending (it fires after 5 minutes).
    def failure_alert():
        alerts = prom.api("/api/v1/alerts")["alerts"]
        if any(a["labels"].get("alertname") == "ConveyorTaskFailureRatioHigh" and
               a["labels"].get("queue") == QUEUE for a in alerts):
            return alerts
        return None
    try:
        alerts = wait_for(failure_alert, 15, "ConveyorTaskFailureRatioHigh for queue " + QUEUE,
                          interval=0.5)
    except TimeoutError as e:
        fail(str(e))
        alerts = prom.api("/api/v1/alerts")["alerts"]
    for a in alerts:
        name = a["labels"].get("alertname")
        if name in QUIET_ALERTS or a["state"] == "firing":
            fail("alert %s is %s: %s" % (name, a["state"], a["labels"]))
    log("alerts: %s" % (", ".join("%s(%s)" % (a["labels"]["alertname"], a["state"])
                                  for a in alerts) or "none"))


# ───────────────────────────── main ─────────────────────────────

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conveyord", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--deploy", required=True, help="the repository's deploy/ directory")
    ap.add_argument("--work", required=True, help="scratch directory (emptied first)")
    ap.add_argument("--prometheus", default="/usr/bin/prometheus")
    ap.add_argument("--promtool", default="/usr/bin/promtool")
    args = ap.parse_args()

    for tool in (args.prometheus, args.promtool):
        if not os.access(tool, os.X_OK):
            print("FAIL: %s not found: scripts/setup installs Debian's prometheus" % tool)
            return 1

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    started = time.monotonic()
    procs = Procs(args.work)
    try:
        secrets = os.path.join(args.work, "secrets")
        # The certificates and tokens the deploy files use, made the same way.
        run(["bash", os.path.join(args.deploy, "gen-certs.sh"), secrets],
            env=dict(os.environ, CONVEYOR=args.cli))
        broker_port, broker_metrics = start_broker(args, procs, secrets)
        worker_metrics = start_worker(args, procs, secrets, broker_port)
        log("conveyord on 127.0.0.1:%d (metrics %d), worker metrics %d" % (
            broker_port, broker_metrics, worker_metrics))
        config = write_prometheus_config(args, broker_metrics, worker_metrics)
        rule_count = promtool_checks(args, config)
        prom = start_prometheus(args, procs, config)
        log("prometheus on %s" % prom.base)

        cli = Cli(args, secrets, broker_port)
        workload(cli, prom)
        log("workload done after %.1fs" % (time.monotonic() - started))

        check_targets(prom)
        check_series(prom)
        check_dashboard(prom, os.path.join(args.deploy, "grafana", "dashboards", "conveyor.json"))
        check_rules(prom, rule_count)
        check_alerts(prom)

        # Both daemons drain on SIGTERM and exit 0 (worker first, as in a deploy).
        for name, grace in (("conveyor-worker", 20), ("conveyord", 20)):
            rc = procs.stop(name, grace)
            if rc != 0:
                fail("%s exited %s after SIGTERM, expected 0:\n%s" % (name, rc, procs.log_tail(name)))
        procs.stop("prometheus", 10)
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as e:
        fail("%s: %s" % (type(e).__name__, e))
        for name in list(procs.procs):
            log("--- %s (last lines)\n%s" % (name, procs.log_tail(name, 15)))
    finally:
        procs.kill_all()

    log("%s in %.1fs" % ("FAILED" if failures else "PASSED", time.monotonic() - started))
    if failures:
        log("%d failure(s):\n  %s" % (len(failures), "\n  ".join(failures)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
