#!/usr/bin/python3
"""A tern client in Python, generated only from proto/ (the public API).

Submits a job spec to a coordinator and watches it to the end:

    /usr/bin/python3 examples/python_client.py --coordinator 127.0.0.1:7070 \
        submit configs/jobs/fmnist-mlp.yaml --set train.epochs=1 --watch
    /usr/bin/python3 examples/python_client.py jobs

Needs python3-grpcio and python3-protobuf (Debian packages) and protoc with
grpc_python_plugin (protobuf-compiler-grpc); the stubs are generated into a cache
directory on first use. Exit code: 0 when the job succeeded (or was submitted without
--watch), 1 when it failed or was cancelled, 2 for a refused spec, 3 when the coordinator
is unreachable.
"""
import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(ROOT, "proto")


def generate_stubs(out_dir):
    """Runs protoc over proto/tern/v1/*.proto into out_dir (python + grpc python)."""
    protos = sorted(
        os.path.join("tern", "v1", f)
        for f in os.listdir(os.path.join(PROTO_DIR, "tern", "v1"))
        if f.endswith(".proto"))
    stamp = os.path.join(out_dir, ".stamp")
    newest = max(os.path.getmtime(os.path.join(PROTO_DIR, p)) for p in protos)
    if os.path.exists(stamp) and os.path.getmtime(stamp) >= newest:
        return
    os.makedirs(out_dir, exist_ok=True)
    plugin = os.environ.get("GRPC_PYTHON_PLUGIN", "/usr/bin/grpc_python_plugin")
    subprocess.run(["protoc", "-I", PROTO_DIR, "--python_out=" + out_dir, "--grpc_out=" + out_dir,
                    "--plugin=protoc-gen-grpc=" + plugin] + protos, check=True)
    open(stamp, "w").close()


STUB_DIR = os.environ.get("TERN_PY_STUBS",
                          os.path.join(tempfile.gettempdir(), "tern-py-stubs-%d" % os.getuid()))
generate_stubs(STUB_DIR)
sys.path.insert(0, STUB_DIR)

import grpc  # noqa: E402
from tern.v1 import coordinator_pb2, coordinator_pb2_grpc, types_pb2  # noqa: E402


def state_name(state):
    return types_pb2.JobState.Name(state).replace("JOB_STATE_", "")


TERMINAL = {types_pb2.JOB_STATE_SUCCEEDED, types_pb2.JOB_STATE_FAILED, types_pb2.JOB_STATE_CANCELLED}


def watch(stub, job_id):
    last = None
    for reply in stub.WatchJob(coordinator_pb2.WatchJobRequest(job_id=job_id, min_interval_ms=500)):
        job = reply.job
        if last is None or job.state != last.state:
            print("%s %s: %s" % (job.job_id, state_name(job.state), job.reason.split("\n")[0]), flush=True)
        elif job.total_steps > 0:
            print("  step %d/%d  loss %.4f  %.0f samples/s" %
                  (job.step, job.total_steps, job.loss, job.samples_per_s), flush=True)
        last = job
    return last


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--coordinator", default=os.environ.get("TERN_COORDINATOR", "127.0.0.1:7070"))
    sub = parser.add_subparsers(dest="command", required=True)
    submit = sub.add_parser("submit", help="submit a job spec (YAML)")
    submit.add_argument("spec")
    submit.add_argument("--set", action="append", default=[], help="override a.b=c")
    submit.add_argument("--watch", action="store_true")
    sub.add_parser("jobs", help="list jobs")
    args = parser.parse_args()

    channel = grpc.insecure_channel(args.coordinator)
    stub = coordinator_pb2_grpc.CoordinatorStub(channel)
    try:
        if args.command == "jobs":
            for job in stub.ListJobs(coordinator_pb2.ListJobsRequest(), timeout=5).jobs:
                print("%-6s %-20s %-10s %d/%d" % (job.job_id, job.name, state_name(job.state), job.step,
                                                  job.total_steps))
            return 0
        with open(args.spec) as f:
            request = coordinator_pb2.SubmitJobRequest(spec_yaml=f.read(), overrides=args.set,
                                                       source_name=args.spec)
        reply = stub.SubmitJob(request, timeout=10)
        print("submitted %s (%s)" % (reply.job_id, reply.job.name), flush=True)
        if not args.watch:
            return 0
        job = watch(stub, reply.job_id)
        if job is None or job.state not in TERMINAL:
            print("the watch ended before the job did", file=sys.stderr)
            return 1
        if job.state == types_pb2.JOB_STATE_SUCCEEDED:
            accuracy = ("%.4f" % job.test_accuracy) if job.HasField("test_accuracy") else "-"
            print("%s SUCCEEDED: %d steps, test accuracy %s" % (job.job_id, job.step, accuracy))
            return 0
        print("%s %s: %s" % (job.job_id, state_name(job.state), job.reason))
        return 1
    except grpc.RpcError as e:
        print("python_client: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
        if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return 2
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return 3
        return 1


if __name__ == "__main__":
    sys.exit(main())
