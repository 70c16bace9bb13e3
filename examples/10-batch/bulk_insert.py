# The batch handler of 10-batch (conveyor-worker --exec-batch): run once per
# batch of tasks. stdin: one JSON line per task ({"id", "payload" in base64,
# "attempt", ...}); stdout: one JSON line per task with its outcome. Here: one
# multi-row INSERT per batch, appended to the file named by argv[1].
import base64
import json
import sys

tasks = [json.loads(line) for line in sys.stdin]
names = [base64.b64decode(t["payload"]).decode() for t in tasks]
with open(sys.argv[1], "a") as sql:
    sql.write("INSERT INTO users (name) VALUES " + ", ".join(f"('{n}')" for n in names) + ";\n")
for t in tasks:
    result = f"inserted in a batch of {len(tasks)}".encode()
    print(json.dumps({"id": t["id"], "ok": True, "result": base64.b64encode(result).decode()}))
