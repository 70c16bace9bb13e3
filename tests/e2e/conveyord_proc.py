"""Starts the real conveyord for the Python e2e tests (examples_test.py,
python_client_test.py): in memory, on 127.0.0.1:0, no metrics port; the port
is read from --port-file. Log in WORK/conveyord.log."""
import subprocess
import sys
import time


def start_broker(conveyord, work, extra_args=()):
    """Returns (Popen, port); exits naming the log if it did not come up in 20 s."""
    port_file = work / "port"
    log = open(work / "conveyord.log", "wb")
    broker = subprocess.Popen(
        [conveyord, "--listen=127.0.0.1:0", f"--port-file={port_file}", "--metrics-addr=",
         *extra_args],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(200):  # 20 s
        if port_file.exists() and port_file.read_text().strip():
            return broker, int(port_file.read_text().strip())
        if broker.poll() is not None:
            break
        time.sleep(0.1)
    broker.kill()
    sys.exit("conveyord did not write its port file:\n" + (work / "conveyord.log").read_text())
