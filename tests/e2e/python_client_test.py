#!/usr/bin/env python3
"""python_client_e2e: the real conveyord driven by another language's gRPC
stack (Debian's python3-grpcio, with Python classes protoc generates from
proto/conveyor/v1/conveyor.proto into a temporary directory).

Starts conveyord on 127.0.0.1:0 (in memory), then:
  - Submit (unary): the task comes back READY with its id;
  - SubmitStream: 300 requests sent from a generator as fast as grpcio
    takes them (the broker reads ahead up to 512): answered one per request,
    in request order; a malformed one (priority 12) is answered
    INVALID_ARGUMENT naming the field and the stream carries on; a repeated
    idempotency key is answered with the original task, deduplicated; the
    stream ends OK after the client half-closes;
  - GetQueue counts exactly the tasks accepted;
  - a stream open when the broker drains (SIGTERM) has its requests answered,
    then ends UNAVAILABLE; the broker exits 0.
Exits non-zero, naming the check, on any failure.
"""
import argparse
import pathlib
import queue as queue_module
import signal
import subprocess
import sys
import tempfile
import time

import grpc

from conveyord_proc import start_broker


def fail(msg):
    sys.exit(f"FAIL python_client_e2e: {msg}")


def generate(proto_root, out):
    out.mkdir()
    subprocess.run(["protoc", f"-I{proto_root}", "-I/usr/include", f"--python_out={out}",
                    str(pathlib.Path(proto_root) / "conveyor/v1/conveyor.proto")], check=True)
    sys.path.insert(0, str(out))
    from conveyor.v1 import conveyor_pb2  # noqa: E402 (generated above)
    return conveyor_pb2


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--conveyord", required=True)
    parser.add_argument("--proto", required=True, help="the proto/ directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conveyor-py-") as tmp:
        work = pathlib.Path(tmp)
        pb = generate(args.proto, work / "gen")
        broker, port = start_broker(args.conveyord, work, ["--drain-grace=1s"])
        try:
            run(pb, port, broker)
        finally:
            if broker.poll() is None:
                broker.kill()
            broker.wait()
    print("OK: Submit, SubmitStream (order, refusals, dedup, half-close, drain) "
          "from python3-grpcio")


def run(pb, port, broker):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=20)
    svc = "/conveyor.v1.TaskService/"
    submit = channel.unary_unary(svc + "Submit",
                                 request_serializer=pb.SubmitRequest.SerializeToString,
                                 response_deserializer=pb.SubmitResponse.FromString)
    stream = channel.stream_stream(
        svc + "SubmitStream", request_serializer=pb.SubmitRequest.SerializeToString,
        response_deserializer=pb.SubmitBatchResponse.Item.FromString)
    get_queue = channel.unary_unary("/conveyor.v1.QueueService/GetQueue",
                                    request_serializer=pb.GetQueueRequest.SerializeToString,
                                    response_deserializer=pb.Queue.FromString)

    def request(i, **task):
        return pb.SubmitRequest(task=pb.TaskSpec(queue="py", type=f"t{i}", payload=b"x" * 64,
                                                 **task))

    first = submit(request(-1), timeout=20)
    if first.task.state != pb.TASK_STATE_READY or len(first.task.id) != 16:
        fail(f"Submit answered {first}")

    n, bad, dup = 300, 120, 200

    def requests():
        for i in range(n):
            if i == bad:
                yield request(i, priority=12)
            elif i == dup:
                yield request(i, idempotency_key="py-key-7")
            else:
                yield request(i, idempotency_key=f"py-key-{i}")

    answers = list(stream(requests(), timeout=60))
    if len(answers) != n:
        fail(f"SubmitStream answered {len(answers)} of {n} requests")
    ids = set()
    for i, item in enumerate(answers):
        if i == bad:
            if item.status.code != grpc.StatusCode.INVALID_ARGUMENT.value[0] or \
                    "priority" not in item.status.message:
                fail(f"request {i} (priority 12) answered {item}")
            continue
        if item.status.code != 0:
            fail(f"request {i} answered {item.status}")
        if item.task.type != f"t{7 if i == dup else i}":
            fail(f"answer {i} is for task type {item.task.type}: answers out of order")
        if item.deduplicated != (i == dup):
            fail(f"answer {i}: deduplicated={item.deduplicated}")
        if i == dup and item.task.id != answers[7].task.id:
            fail("the repeated key did not return the original task")
        ids.add(item.task.id)
    if len(ids) != n - 2:
        fail(f"{len(ids)} distinct ids for {n - 2} distinct tasks")

    queue = get_queue(pb.GetQueueRequest(name="py"), timeout=20)
    if queue.stats.ready != n - 2 + 1:
        fail(f"queue py holds {queue.stats.ready} READY tasks, not {n - 1}")

    # A stream open when the broker drains: what it sent is answered, then the
    # stream ends UNAVAILABLE (a cue to send the rest again later).
    outbox = queue_module.Queue()

    def open_requests():
        while True:
            item = outbox.get()
            if item is None:
                return
            yield item

    live = stream(open_requests(), timeout=60)
    for i in range(3):
        outbox.put(request(1000 + i))
        answer = next(live)
        if answer.status.code != 0 or answer.task.type != f"t{1000 + i}":
            fail(f"open stream answered {answer}")
    broker.send_signal(signal.SIGTERM)
    try:
        extra = list(live)
        fail(f"the stream ended OK on drain, after {len(extra)} more answers")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAVAILABLE or "draining" not in e.details():
            fail(f"the open stream ended {e.code()}: {e.details()}")
    finally:
        outbox.put(None)
    if broker.wait(timeout=30) != 0:
        fail(f"conveyord exited {broker.returncode} after SIGTERM")


if __name__ == "__main__":
    main()
