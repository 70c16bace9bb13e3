#!/usr/bin/env python3
"""Checks deploy/ and the Dockerfile against the binaries they run.

Nothing here runs Docker, Kubernetes or systemd; instead it checks what
would otherwise only fail on a real deploy:

  - every YAML file under deploy/ parses;
  - every flag that the Compose file, the Kubernetes manifests, the systemd
    units and the Dockerfile pass to conveyord, conveyor-worker or conveyor
    is one the built binary accepts;
  - grace periods cover the drains (stop_grace_period,
    terminationGracePeriodSeconds, TimeoutStopSec against --drain-grace,
    --grace and --exec-kill-grace);
  - references hold: Compose secrets, volumes and mounts; Kubernetes
    ConfigMap keys, $(VAR)s, Secrets, named ports, selectors; the files both
    take from deploy/gen-certs.sh are files it makes; the names clients dial
    are in the broker's certificate; Prometheus targets match the metrics
    ports; Grafana's provisioning matches its mounts and the dashboard's
    datasource;
  - the Dockerfile: build steps are calls of scripts/, the binaries are
    copied from where scripts/build puts them, and deploy/runtime-packages
    holds the Debian package of every shared library the binaries load (ldd);
  - `systemd-analyze verify` accepts the units (scripts/setup installs systemd).

Needs python3-yaml (scripts/setup). Exit 0 on success, 1 with the reasons.
"""

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import yaml

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def log(msg):
    print(msg, flush=True)


def seconds(text):
    """'1m30s', '25s', '10', 45 -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    total, pos = 0.0, 0
    text = text.strip()
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|h|m|s)?", text):
        if m.start() != pos:
            raise ValueError("not a duration: %r" % text)
        pos = m.end()
        total += float(m.group(1)) * {"ms": 0.001, "h": 3600, "m": 60, "s": 1, None: 1}[m.group(2)]
    if pos != len(text) or not text:
        raise ValueError("not a duration: %r" % text)
    return total


class Binaries:
    """The flags each built binary accepts."""

    def __init__(self, args):
        self.paths = {"conveyord": args.conveyord, "conveyor-worker": args.worker,
                      "conveyor": args.cli}
        self.daemon_flags = {}
        for name in ("conveyord", "conveyor-worker"):
            out = subprocess.run([self.paths[name], "--helpfull"], capture_output=True,
                                 text=True).stdout
            self.daemon_flags[name] = set(re.findall(r"^\s+--(\w+) \(", out, re.M))
            if len(self.daemon_flags[name]) < 10:
                raise RuntimeError("%s --helpfull lists no flags:\n%s" % (name, out[:500]))
        self.cli_help = {}

    def cli_flags(self, command):
        key = tuple(command)
        if key not in self.cli_help:
            out = subprocess.run([self.paths["conveyor"], *command, "--help"],
                                 capture_output=True, text=True)
            text = out.stdout + out.stderr
            self.cli_help[key] = set(re.findall(r"(?:^|\s)--([a-z][a-z0-9-]*)", text))
        return self.cli_help[key]

    def check(self, where, argv):
        """argv: the command line as written (argv[0] the binary)."""
        name = os.path.basename(argv[0])
        if name not in self.paths:
            fail("%s: runs %r, not one of %s" % (where, argv[0], sorted(self.paths)))
            return
        flags = [a[2:].split("=", 1)[0] for a in argv[1:] if a.startswith("--")]
        if name == "conveyor":
            command = [a for a in argv[1:] if not a.startswith("-")][:2]
            known = self.cli_flags([])
            for n in (1, 2):
                if len(command) >= n:
                    known |= self.cli_flags(command[:n])
            for f in flags:
                if f not in known:
                    fail("%s: conveyor %s has no flag --%s" % (where, " ".join(command), f))
            return
        for f in flags:
            if f.replace("-", "_") not in self.daemon_flags[name]:
                fail("%s: %s has no flag --%s" % (where, name, f))

    @staticmethod
    def flag(argv, name, default=None):
        for a in argv[1:]:
            for spelling in (name, name.replace("-", "_")):
                if a.startswith("--%s=" % spelling):
                    return a.split("=", 1)[1]
        return default


DRAIN_GRACE = "10s"        # conveyord --drain-grace default
WORKER_GRACE = "25s"       # conveyor-worker --grace default
EXEC_KILL_GRACE = "5s"     # conveyor-worker --exec-kill-grace default
MARGIN = 5.0               # time for the last RPCs, the journal flush, exit


def need_broker_stop(where, have, argv_or_grace):
    grace = seconds(argv_or_grace)
    if have < grace + MARGIN:
        fail("%s: %gs to stop the broker, but it drains for %gs (+%gs)" % (where, have, grace, MARGIN))


def need_worker_stop(where, have, grace, kill_grace):
    need = seconds(grace) + seconds(kill_grace) + MARGIN
    if have < need:
        fail("%s: %gs to stop a worker, it may need %gs (--grace %s + --exec-kill-grace %s + %gs)"
             % (where, have, need, grace, kill_grace, MARGIN))


# ───────────────────────────── gen-certs.sh ─────────────────────────────

def gen_certs(args, tmp):
    out = os.path.join(tmp, "secrets")
    r = subprocess.run(["bash", os.path.join(args.deploy, "gen-certs.sh"), out],
                       capture_output=True, text=True, env=dict(os.environ, CONVEYOR=args.cli))
    if r.returncode != 0:
        raise RuntimeError("gen-certs.sh failed:\n" + r.stdout + r.stderr)
    made = set(os.listdir(out))
    san = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                          os.path.join(out, "broker.crt")], capture_output=True, text=True).stdout
    names = set(re.findall(r"DNS:([^,\s]+)", san)) | set(re.findall(r"IP Address:([^,\s]+)", san))
    log("gen-certs.sh makes %s; broker names %s" % (sorted(made), sorted(names)))
    return made, names


# ───────────────────────────── Compose ─────────────────────────────

def check_compose(args, bins, made, cert_names):
    path = os.path.join(args.deploy, "docker-compose.yml")
    doc = yaml.safe_load(open(path))
    services = doc["services"]
    for want in ("conveyord", "worker", "prometheus", "grafana"):
        if want not in services:
            fail("compose: no service %s" % want)
    for name, svc in services.items():
        where = "compose service %s" % name
        cmd = svc.get("command")
        if isinstance(cmd, list) and cmd and os.path.basename(cmd[0]).startswith("conveyor"):
            bins.check(where, cmd)
        hc = svc.get("healthcheck", {}).get("test")
        if isinstance(hc, list) and hc[:1] == ["CMD"]:
            bins.check(where + " healthcheck", hc[1:])
        for s in svc.get("secrets", []):
            s = s if isinstance(s, str) else s["source"]
            if s not in doc.get("secrets", {}):
                fail("%s: secret %s is not declared" % (where, s))
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                if not os.path.exists(os.path.join(args.deploy, src)):
                    fail("%s: mounts %s, which does not exist" % (where, src))
            elif src not in (doc.get("volumes") or {}):
                fail("%s: volume %s is not declared" % (where, src))
    for name, s in (doc.get("secrets") or {}).items():
        f = s.get("file", "")
        if not f.startswith("./secrets/") or os.path.basename(f) not in made:
            fail("compose: secret %s is %s, which deploy/gen-certs.sh does not make" % (name, f))

    broker = services["conveyord"]["command"]
    need_broker_stop("compose conveyord stop_grace_period",
                     seconds(services["conveyord"].get("stop_grace_period", "10s")),
                     bins.flag(broker, "drain-grace", DRAIN_GRACE))
    worker = services["worker"]["command"]
    need_worker_stop("compose worker stop_grace_period",
                     seconds(services["worker"].get("stop_grace_period", "10s")),
                     bins.flag(worker, "grace", WORKER_GRACE),
                     bins.flag(worker, "exec-kill-grace", EXEC_KILL_GRACE))
    for addr in (bins.flag(worker, "broker") or "").split(","):
        host, port = addr.rsplit(":", 1)
        if host not in services:
            fail("compose worker: --broker=%s names no service" % addr)
        if host not in cert_names:
            fail("compose worker: dials %s, which is not a name in broker.crt" % host)
        if port != bins.flag(broker, "listen", "").rsplit(":", 1)[-1]:
            fail("compose worker: --broker=%s, but conveyord listens on %s"
                 % (addr, bins.flag(broker, "listen")))
    hc = services["conveyord"].get("healthcheck", {}).get("test", [])
    addr = Binaries.flag(hc[1:], "addr") if len(hc) > 1 else None
    if addr and addr.rsplit(":", 1)[0] not in cert_names:
        fail("compose conveyord healthcheck dials %s, not a name in broker.crt" % addr)

    # Prometheus scrapes the metrics ports the daemons listen on.
    prom = yaml.safe_load(open(os.path.join(args.deploy, "prometheus", "prometheus.yml")))
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    bport = bins.flag(broker, "metrics-addr", "").rsplit(":", 1)[-1]
    targets = [t for sc in jobs.get("conveyord", {}).get("static_configs", []) for t in sc["targets"]]
    if targets != ["conveyord:%s" % bport]:
        fail("prometheus.yml: job conveyord scrapes %s; the broker serves /metrics on "
             "conveyord:%s" % (targets, bport))
    wport = bins.flag(worker, "metrics-addr", "").rsplit(":", 1)[-1]
    dns = jobs.get("conveyor-worker", {}).get("dns_sd_configs", [{}])[0]
    if dns.get("names") != ["worker"] or str(dns.get("port")) != wport:
        fail("prometheus.yml: job conveyor-worker finds %s:%s; workers are service `worker` "
             "on port %s" % (dns.get("names"), dns.get("port"), wport))

    # Grafana: the provider's path is where the dashboards are mounted, and
    # the dashboard's datasource is the provisioned one.
    gv = services["grafana"]["volumes"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in gv}
    prov = yaml.safe_load(open(os.path.join(args.deploy, "grafana", "provisioning",
                                            "dashboards", "conveyor.yml")))
    dpath = prov["providers"][0]["options"]["path"]
    if mounted.get(dpath) != "./grafana/dashboards":
        fail("grafana: the provider reads %s, but ./grafana/dashboards is mounted at %s"
             % (dpath, [k for k, v in mounted.items() if v == "./grafana/dashboards"]))
    ds = yaml.safe_load(open(os.path.join(args.deploy, "grafana", "provisioning",
                                          "datasources", "prometheus.yml")))
    uids = {d["uid"] for d in ds["datasources"]}
    dash = json.load(open(os.path.join(args.deploy, "grafana", "dashboards", "conveyor.json")))

    used = set()

    def walk(obj):
        if isinstance(obj, dict):
            if isinstance(obj.get("datasource"), dict):
                used.add(obj["datasource"].get("uid"))
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)
    walk(dash)
    if used - uids:
        fail("dashboard: datasource uids %s are not provisioned (%s)"
             % (sorted(used - uids), sorted(uids)))


# ───────────────────────────── Kubernetes ─────────────────────────────

def check_k8s(args, bins, made, cert_names):
    kdir = os.path.join(args.deploy, "k8s")
    kust = yaml.safe_load(open(os.path.join(kdir, "kustomization.yaml")))
    docs = []
    for res in kust["resources"]:
        p = os.path.join(kdir, res)
        if not os.path.exists(p):
            fail("kustomization: resource %s does not exist" % res)
            continue
        docs += [d for d in yaml.safe_load_all(open(p)) if d]
    for f in glob.glob(os.path.join(kdir, "*.yaml")):
        if os.path.basename(f) not in kust["resources"] + ["kustomization.yaml"]:
            fail("k8s: %s is not in kustomization.yaml's resources" % os.path.basename(f))
    secrets = {}
    for g in kust.get("secretGenerator", []):
        keys = set()
        for f in g.get("files", []):
            key, _, src = f.partition("=")
            src = src or key
            keys.add(key if "=" in f else os.path.basename(src))
            if not src.startswith("secrets/") or os.path.basename(src) not in made:
                fail("kustomization: secret %s takes %s, which deploy/gen-certs.sh does not make"
                     % (g["name"], src))
        secrets[g["name"]] = keys
    by_kind = {}
    for d in docs:
        for k in ("apiVersion", "kind", "metadata"):
            if k not in d:
                fail("k8s: a document without %s: %s" % (k, str(d)[:80]))
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    config = by_kind.get("ConfigMap", {}).get("conveyor-config", {}).get("data", {})

    workloads = list(by_kind.get("StatefulSet", {}).values()) + \
        list(by_kind.get("Deployment", {}).values())
    if [w["metadata"]["name"] for w in workloads] != ["conveyord", "conveyor-worker"]:
        fail("k8s: expected StatefulSet conveyord and Deployment conveyor-worker, got %s"
             % [(w["kind"], w["metadata"]["name"]) for w in workloads])
    for w in workloads:
        where = "k8s %s %s" % (w["kind"], w["metadata"]["name"])
        pod = w["spec"]["template"]
        spec = pod["spec"]
        labels = pod["metadata"].get("labels", {})
        if w["spec"]["selector"]["matchLabels"].items() - labels.items():
            fail("%s: selector does not match the pod labels" % where)
        psc = spec.get("securityContext", {})
        if not psc.get("runAsNonRoot") or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            fail("%s: pod must run as non-root with the RuntimeDefault seccomp profile" % where)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        volumes.update({t["metadata"]["name"]: t for t in w["spec"].get("volumeClaimTemplates", [])})
        for v in volumes.values():
            s = v.get("secret")
            if s and s["secretName"] not in secrets:
                fail("%s: Secret %s is not generated by kustomization.yaml" % (where, s["secretName"]))
        for c in spec["containers"]:
            cw = "%s container %s" % (where, c["name"])
            env = {e["name"] for e in c.get("env", [])}
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("configMapKeyRef")
                if ref and ref["key"] not in config:
                    fail("%s: ConfigMap has no key %s" % (cw, ref["key"]))
            for ef in c.get("envFrom", []):
                if ef.get("configMapRef", {}).get("name") == "conveyor-config":
                    env |= set(config)
            argv = c.get("command", []) + c.get("args", [])
            for var in re.findall(r"\$\((\w+)\)", " ".join(argv)):
                if var not in env:
                    fail("%s: $(%s) is not defined" % (cw, var))
            resolved = [re.sub(r"\$\((\w+)\)", lambda m: str(config.get(m.group(1), "x")), a)
                        for a in argv]
            bins.check(cw, resolved)
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False or \
                    sc.get("capabilities", {}).get("drop") != ["ALL"]:
                fail("%s: needs allowPrivilegeEscalation: false and capabilities drop ALL" % cw)
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            if mounts - set(volumes):
                fail("%s: mounts volumes that do not exist: %s" % (cw, mounts - set(volumes)))
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if probe is None:
                    if kind != "startupProbe" or w["kind"] == "StatefulSet":
                        fail("%s: no %s" % (cw, kind))
                    continue
                if "exec" in probe:
                    bins.check("%s %s" % (cw, kind), probe["exec"]["command"])
                    addr = Binaries.flag(probe["exec"]["command"], "addr")
                    if addr and addr.rsplit(":", 1)[0] not in cert_names:
                        fail("%s %s: dials %s, not a name in broker.crt" % (cw, kind, addr))
                for h in ("httpGet", "grpc", "tcpSocket"):
                    port = probe.get(h, {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        fail("%s %s: no container port named %s" % (cw, kind, port))
            tgps = spec.get("terminationGracePeriodSeconds", 30)
            if w["kind"] == "StatefulSet":
                need_broker_stop(where + " terminationGracePeriodSeconds", tgps,
                                 Binaries.flag(resolved, "drain-grace", DRAIN_GRACE))
                listen = Binaries.flag(resolved, "listen", "")
                if str(ports.get("grpc")) != listen.rsplit(":", 1)[-1]:
                    fail("%s: port grpc is %s but --listen=%s" % (cw, ports.get("grpc"), listen))
            else:
                need_worker_stop(where + " terminationGracePeriodSeconds", tgps,
                                 Binaries.flag(resolved, "grace", WORKER_GRACE),
                                 Binaries.flag(resolved, "exec-kill-grace", EXEC_KILL_GRACE))
                mport = Binaries.flag(resolved, "metrics-addr", "").rsplit(":", 1)[-1]
                if str(ports.get("metrics")) != mport:
                    fail("%s: port metrics is %s but --metrics-addr port is %s"
                         % (cw, ports.get("metrics"), mport))
        for svc in by_kind.get("Service", {}).values():
            sel = svc["spec"].get("selector", {})
            if sel and not sel.items() - labels.items():
                named = {p["name"] for c in spec["containers"] for p in c.get("ports", [])}
                for p in svc["spec"]["ports"]:
                    if isinstance(p.get("targetPort"), str) and p["targetPort"] not in named:
                        fail("Service %s: targetPort %s is no port of %s"
                             % (svc["metadata"]["name"], p["targetPort"], where))
    for svc in by_kind.get("Service", {}).values():
        sel = svc["spec"].get("selector", {})
        if not any(not sel.items() - w["spec"]["template"]["metadata"].get("labels", {}).items()
                   for w in workloads):
            fail("Service %s selects no pod" % svc["metadata"]["name"])
    host = config.get("CONVEYOR_ADDR", "").rsplit(":", 1)[0]
    if host not in by_kind.get("Service", {}) or host not in cert_names:
        fail("ConfigMap CONVEYOR_ADDR=%s: must be a Service and a name in broker.crt"
             % config.get("CONVEYOR_ADDR"))
    for key in ("CONVEYOR_TLS_CA", "CONVEYOR_TOKEN_FILE"):
        base = os.path.basename(config.get(key, ""))
        if base not in secrets.get("conveyor-worker-credentials", set()):
            fail("ConfigMap %s=%s is not a file of Secret conveyor-worker-credentials"
                 % (key, config.get(key)))


# ───────────────────────────── systemd ─────────────────────────────

def unit_exec_start(text):
    text = text.replace("\\\n", " ")
    m = re.search(r"^ExecStart=(.*)$", text, re.M)
    return shlex.split(m.group(1))


def unit_value(text, key):
    m = re.findall(r"^%s=(.*)$" % key, text, re.M)
    return m[-1].strip() if m else None


def check_systemd(args, bins, tmp):
    sdir = os.path.join(args.deploy, "systemd")
    units = {"conveyord.service": "conveyord", "conveyor-worker@.service": "conveyor-worker"}
    for unit, binary in units.items():
        text = open(os.path.join(sdir, unit)).read()
        argv = unit_exec_start(text)
        bins.check("systemd %s" % unit, [a for a in argv if not a.startswith("$")])
        for key in ("KillSignal", "TimeoutStopSec", "Restart"):
            if unit_value(text, key) is None:
                fail("systemd %s: no %s=" % (unit, key))
        if unit_value(text, "Restart") != "on-failure" or unit_value(text, "KillSignal") != "SIGTERM":
            fail("systemd %s: needs Restart=on-failure and KillSignal=SIGTERM" % unit)
        if unit_value(text, "DynamicUser") != "yes" and unit_value(text, "User") is None:
            fail("systemd %s: runs as root (no DynamicUser= or User=)" % unit)
        stop = seconds(unit_value(text, "TimeoutStopSec") or "90s")
        env = dict(kv.split("=", 1) for line in re.findall(r"^Environment=(.*)$", text, re.M)
                   for kv in shlex.split(line))
        resolved = [re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), a) for a in argv]
        if binary == "conveyord":
            need_broker_stop("systemd %s TimeoutStopSec" % unit, stop,
                             Binaries.flag(resolved, "drain-grace", DRAIN_GRACE))
        else:
            if unit_value(text, "KillMode") != "mixed":
                fail("systemd %s: KillMode=mixed, or SIGTERM reaches --exec commands at once" % unit)
            need_worker_stop("systemd %s TimeoutStopSec" % unit, stop,
                             Binaries.flag(resolved, "grace", WORKER_GRACE),
                             Binaries.flag(resolved, "exec-kill-grace", EXEC_KILL_GRACE))

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        fail("systemd-analyze is not installed (scripts/setup installs systemd)")
        return
    vdir = os.path.join(tmp, "units")
    os.makedirs(vdir)
    for unit, binary in units.items():
        text = open(os.path.join(sdir, unit)).read()
        text = text.replace("/usr/local/bin/%s" % binary, bins.paths[binary])
        name = unit.replace("@.", "@check.")
        with open(os.path.join(vdir, name), "w") as f:
            f.write(text)
    names = [os.path.join(vdir, u.replace("@.", "@check.")) for u in units]
    r = subprocess.run([analyze, "verify", "--man=no"] + names, capture_output=True, text=True,
                       cwd=vdir)
    # verify exits 0 on unknown keys and bad values: judge by what it prints
    # about our files.
    bad = [line for line in (r.stdout + r.stderr).splitlines() if vdir in line or
           any(os.path.basename(n) in line for n in names)]
    if r.returncode != 0 or bad:
        fail("systemd-analyze verify:\n" + "\n".join(bad or [r.stdout + r.stderr]))
    else:
        log("systemd-analyze verify: ok")


# ───────────────────────────── Dockerfile ─────────────────────────────

def packages_of(binaries):
    """Debian packages of the shared libraries `binaries` load, and the
    libraries no package holds. One dpkg -S for all of them (it is slow)."""
    libs = set()
    for binary in binaries:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            m = re.search(r"=> (/\S+)", line) or re.match(r"\s*(/\S+)", line)
            if m:
                libs.add(m.group(1))
    # With merged /usr a library may be registered under /lib or /usr/lib.
    names = {}
    for lib in libs:
        for c in {lib, os.path.realpath(lib)}:
            for v in (c, c[4:] if c.startswith("/usr/") else "/usr" + c):
                names.setdefault(v, lib)
    r = subprocess.run(["dpkg", "-S"] + sorted(names), capture_output=True, text=True)
    pkgs, found = set(), set()
    for line in r.stdout.splitlines():
        pkg, _, path = line.partition(": ")
        if path.strip() in names:
            pkgs.add(pkg.split(":")[0].strip())
            found.add(names[path.strip()])
    return pkgs, sorted(libs - found)


def check_docker(args, bins):
    text = open(os.path.join(args.source, "Dockerfile")).read()
    text_joined = text.replace("\\\n", " ")
    stages = re.split(r"^FROM ", text_joined, flags=re.M)[1:]
    names = [s.split()[2] if len(s.split()) > 2 and s.split()[1].upper() == "AS" else "?"
             for s in stages]
    if names[:1] != ["build"] or names[-1] != "runtime":
        fail("Dockerfile: stages %s; expected build first and runtime last" % names)
    for name, stage in zip(names, stages):
        if name == "runtime":
            continue
        for run in re.findall(r"^RUN (.*)$", stage, re.M):
            if not re.fullmatch(r"\./scripts/[a-z-]+( [\w .=-]+)?", run.strip()):
                fail("Dockerfile stage %s: `RUN %s` is not a call of scripts/ (the image must "
                     "build as CI does)" % (name, run.strip()))
    runtime = stages[-1]
    for binary, path in bins.paths.items():
        rel = os.path.relpath(path, args.build)
        if "/src/build/" + rel not in runtime:
            fail("Dockerfile: copies no /src/build/%s (where scripts/build puts %s)" % (rel, binary))
    if not re.search(r"^USER (?!0\b|root\b)\S+", runtime, re.M):
        fail("Dockerfile: the runtime stage does not switch to a non-root USER")
    exposed = set(re.findall(r"\d+", " ".join(re.findall(r"^EXPOSE (.*)$", runtime, re.M))))
    if not {"7400", "9464", "9465"} <= exposed:
        fail("Dockerfile: EXPOSE %s; expected 7400 9464 9465" % sorted(exposed))
    m = re.search(r"^CMD (\[.*\])", runtime, re.M)
    if not m or not re.search(r"^ENTRYPOINT ", runtime, re.M):
        fail("Dockerfile: needs ENTRYPOINT and CMD")
    else:
        bins.check("Dockerfile CMD", json.loads(m.group(1)))

    listed = set()
    with open(os.path.join(args.deploy, "runtime-packages")) as f:
        for line in f:
            listed.update(line.split("#")[0].split())
    needed, unknown = packages_of(bins.paths.values())
    if unknown:
        fail("ldd: no Debian package holds %s" % unknown)
    if needed - listed:
        fail("deploy/runtime-packages lacks %s (the binaries load their libraries)"
             % sorted(needed - listed))
    for pkg in sorted(listed):
        known = subprocess.run(["dpkg-query", "-W", pkg], capture_output=True).returncode == 0 or \
            subprocess.run(["apt-cache", "show", pkg], capture_output=True).returncode == 0
        if not known:
            fail("deploy/runtime-packages: %s is not a Debian package known here" % pkg)
    log("runtime packages: %d needed by ldd, %d listed" % (len(needed), len(listed)))

    ignore = open(os.path.join(args.source, ".dockerignore")).read().split()
    for want in ("build*", "deploy/secrets", ".git"):
        if want not in ignore:
            fail(".dockerignore does not exclude %s" % want)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conveyord", required=True)
    ap.add_argument("--worker", required=True)
    ap.add_argument("--cli", required=True)
    ap.add_argument("--source", required=True, help="the repository's root")
    ap.add_argument("--build", required=True, help="the CMake build directory")
    args = ap.parse_args()
    args.deploy = os.path.join(args.source, "deploy")

    yml = sorted(glob.glob(os.path.join(args.deploy, "**", "*.y*ml"), recursive=True))
    yml = [p for p in yml if "/secrets/" not in p]
    for p in yml:
        try:
            list(yaml.safe_load_all(open(p)))
        except yaml.YAMLError as e:
            fail("%s: %s" % (os.path.relpath(p, args.source), e))
    log("YAML: %d files parse" % len(yml))

    bins = Binaries(args)
    with tempfile.TemporaryDirectory(prefix="deploy-config-") as tmp:
        made, cert_names = gen_certs(args, tmp)
        for check in (lambda: check_compose(args, bins, made, cert_names),
                      lambda: check_k8s(args, bins, made, cert_names),
                      lambda: check_systemd(args, bins, tmp),
                      lambda: check_docker(args, bins)):
            try:
                check()
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                fail("%s: %r" % (check.__code__.co_names, e))
    if failures:
        log("FAILED: %d failure(s):\n  %s" % (len(failures), "\n  ".join(failures)))
        return 1
    log("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
