#!/usr/bin/env python3
"""Runs one tern job with N local tern-trainer ranks (no coordinator) and prints rank 0's
`finished` summary as one JSON line. Used by bench/compression.sh; `tern run` does the same
with a progress line, this keeps the benchmark independent of the CLI build.

  compression_run.py --trainer build/bin/tern-trainer --spec configs/jobs/x.yaml --workers 4 \
      [--set compress.method=dgc ...] [--cluster FILE] [--timeout S]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import yaml


def set_path(doc, dotted, text):
    keys = dotted.split(".")
    node = doc
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = yaml.safe_load(text)


def parse_event(line):
    try:
        return json.loads(line)
    except ValueError:
        return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--cluster", default="")
    ap.add_argument("--regions", default="")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--log-dir", default="")
    # Also every rank's own figures (as `tern run --json` reports them: computed samples, waits,
    # straggler_*), the mean bytes_sent_per_rank and train_wall_s; bench/stragglers.sh uses it.
    ap.add_argument("--all-ranks", action="store_true")
    a = ap.parse_args()

    with open(a.spec) as f:
        doc = yaml.safe_load(f)
    doc["workers"] = a.workers
    for s in a.set:
        k, v = s.split("=", 1)
        set_path(doc, k, v)
    tmp = tempfile.mkdtemp(prefix="tern-bench-")
    spec_path = os.path.join(tmp, "spec.yaml")
    with open(spec_path, "w") as f:
        yaml.safe_dump(doc, f)
    log_dir = a.log_dir or tmp
    os.makedirs(log_dir, exist_ok=True)

    master = "127.0.0.1:%d" % free_port()
    procs = []
    for r in range(a.workers):
        argv = [a.trainer, "--spec", spec_path, "--rank", str(r), "--world", str(a.workers), "--master", master,
                "--work-dir", tmp]
        if a.cluster:
            argv += ["--cluster", a.cluster]
            if a.regions:
                argv += ["--regions", a.regions]
        out = open(os.path.join(log_dir, "rank%d.events" % r), "w")
        err = open(os.path.join(log_dir, "rank%d.log" % r), "w")
        procs.append((subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL), out, err))
    deadline = time.time() + a.timeout
    codes = []
    for p, out, err in procs:
        try:
            codes.append(p.wait(timeout=max(1, deadline - time.time())))
        except subprocess.TimeoutExpired:
            for q, _, _ in procs:
                q.kill()
            codes.append(-9)
        out.close()
        err.close()
    summary = None
    progress = []
    with open(os.path.join(log_dir, "rank0.events")) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == "finished":
                summary = e["summary"]
            elif e.get("event") == "progress":
                progress.append(e)
    if summary is None or any(c != 0 for c in codes):
        sys.stderr.write("job failed: exit codes %s; logs in %s\n" % (codes, log_dir))
        for r in range(a.workers):
            with open(os.path.join(log_dir, "rank%d.log" % r)) as f:
                tail = f.read()[-2000:]
            sys.stderr.write("--- rank %d ---\n%s\n" % (r, tail))
        return 1
    summary["progress"] = [{k: e.get(k) for k in ("step", "loss", "compression_ratio", "bytes_sent")}
                           for e in progress]
    if a.all_ranks:
        ranks, sent = [], []
        for r in range(a.workers):
            with open(os.path.join(log_dir, "rank%d.events" % r)) as f:
                s = next((e["summary"] for e in map(parse_event, f) if e and e.get("event") == "finished"), {})
            rank = {k: s.get(k, 0) for k in ("computed_samples", "wait_s", "injected_delay_s")}
            rank.update({k: v for k, v in s.items() if k.startswith("straggler_")})
            ranks.append(rank)
            sent.append(s.get("bytes_sent_per_rank", 0))
        summary["ranks"] = ranks
        summary["bytes_sent_per_rank"] = sum(sent) / len(sent)
        summary["train_wall_s"] = summary.get("wall_s", 0)
        summary["state"] = "SUCCEEDED"
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
