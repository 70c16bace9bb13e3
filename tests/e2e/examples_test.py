#!/usr/bin/env python3
"""examples_e2e: runs every examples/NN-*/run.sh against a fresh broker.

Starts the real conveyord on 127.0.0.1:0 (in memory, no metrics port), reads
its port from --port-file, then runs each example's run.sh in turn with
CONVEYOR_ADDR pointing at it and CONVEYOR_BUILD_DIR at the build tree (where
the examples find conveyor, conveyor-worker and the example programs). Each
example checks its own outcome and exits non-zero if the pattern did not
behave, and its last line is "OK: ..." when it did; each gets --timeout
seconds (then its process group is killed). Also checks that
examples/README.md lists every example. Fails if any example
fails; prints every example's output and time.
"""
import argparse
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

from conveyord_proc import start_broker


def run_example(script, env, timeout):
    """Runs one run.sh; returns (exit status or None on timeout, output, seconds)."""
    start = time.monotonic()
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        # SIGTERM lets the script stop its workers; then kill what is left.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        status = None
    # Whatever the script left behind in its process group (it should be none).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return status, out.decode(errors="replace"), time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conveyord", required=True)
    parser.add_argument("--build", required=True, help="the CMake build tree")
    parser.add_argument("--examples", required=True, help="the examples/ source directory")
    parser.add_argument("--timeout", type=float, default=40, help="seconds per example")
    parser.add_argument("--only", default="", help="run only examples whose name contains this")
    args = parser.parse_args()

    examples = pathlib.Path(args.examples)
    scripts = sorted(examples.glob("[0-9][0-9]-*/run.sh"))
    if len(scripts) < 12:
        sys.exit(f"expected at least 12 examples in {examples}, found {len(scripts)}")
    readme = (examples / "README.md").read_text()
    missing = [s.parent.name for s in scripts if f"{s.parent.name}/run.sh" not in readme]
    if missing:
        sys.exit(f"examples/README.md does not list: {', '.join(missing)}")
    scripts = [s for s in scripts if args.only in s.parent.name]

    failures = []
    total_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="examples_e2e.") as tmp:
        work = pathlib.Path(tmp)
        broker, port = start_broker(args.conveyord, work)
        env = dict(os.environ)
        env.update(CONVEYOR_ADDR=f"127.0.0.1:{port}", CONVEYOR_BUILD_DIR=args.build,
                   TMPDIR=tmp)
        env.pop("CONVEYOR_BIN_DIR", None)
        # The examples run `python3`: this interpreter (Debian's), found first.
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        try:
            for script in scripts:
                name = script.parent.name
                status, out, seconds = run_example(script, env, args.timeout)
                if status is None:
                    verdict = f"TIMED OUT after {args.timeout:.0f}s"
                elif status != 0:
                    verdict = f"exit {status}"
                elif not out.rstrip().splitlines()[-1:] or \
                        not out.rstrip().splitlines()[-1].startswith("OK: "):
                    # Every example ends with its "OK: ..." verdict.
                    verdict = "exit 0 without its closing OK line"
                else:
                    verdict = "ok"
                print(f"===== {name}: {verdict} ({seconds:.1f}s)\n{out}", flush=True)
                if verdict != "ok":
                    failures.append(f"{name} ({verdict})")
        finally:
            broker.send_signal(signal.SIGTERM)
            try:
                broker_status = broker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker_status = "killed after 30 s"
        if broker_status != 0:
            failures.append(f"conveyord exited {broker_status} after SIGTERM")
            print((work / "conveyord.log").read_text()[-4000:])

    print(f"{len(scripts)} examples in {time.monotonic() - total_start:.1f}s")
    if failures:
        print("FAILED: " + ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
