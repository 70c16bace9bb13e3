# The fan-in callback of 04-fan-out-fan-in, run by conveyor-worker --exec.
# stdin: the group's GroupResults as JSON (bytes fields in base64); stdout:
# the callback's result.
import base64
import json
import sys

group = json.load(sys.stdin)
results = [int(base64.b64decode(m["result"])) for m in group["members"]
           if m["state"] == "TASK_STATE_SUCCEEDED"]
label = base64.b64decode(group.get("payload", "")).decode()
print(f"{label}: {len(results)} of {group['total']} parts, sum {sum(results)}", end="")
