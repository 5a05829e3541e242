#!/usr/bin/python3
"""ctest: the Python client of examples/ (stubs generated from proto/ only) submits and
watches a job on a real `tern coordinator` with one `tern worker` running the fake trainer,
and gets INVALID_ARGUMENT with the field name for a bad spec."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SRC = os.environ.get("TERN_SOURCE_DIR", os.getcwd())
BIN = os.environ.get("TERN_BIN_DIR", os.path.join(SRC, "build", "bin"))
CLIENT = os.path.join(SRC, "examples", "python_client.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def main():
    tmp = tempfile.mkdtemp(prefix="tern_pyclient_")
    procs = []
    try:
        addr = "127.0.0.1:%d" % free_port()
        env = dict(os.environ, TERN_PY_STUBS=os.path.join(tmp, "stubs"))
        log = open(os.path.join(tmp, "daemons.log"), "w")
        procs.append(subprocess.Popen([os.path.join(BIN, "tern"), "coordinator", "--listen", addr,
                                       "--state-dir", os.path.join(tmp, "state")], stdout=log, stderr=log))
        procs.append(subprocess.Popen([os.path.join(BIN, "tern"), "worker", "--coordinator", addr, "--name", "py-0",
                                       "--work-dir", os.path.join(tmp, "work"), "--trainer",
                                       os.path.join(SRC, "tests", "worker", "fake_trainer.sh")],
                                      stdout=log, stderr=log))
        spec = os.path.join(tmp, "job.yaml")
        with open(spec, "w") as f:
            f.write("name: py-job\nworkers: 1\ndata: {source: synthetic, train_size: 512, test_size: 128}\n")
        deadline = time.time() + 30
        while True:  # wait for the coordinator and the worker
            r = subprocess.run([os.path.join(BIN, "tern"), "workers", "--coordinator", addr, "--json"],
                               capture_output=True, text=True)
            if r.returncode == 0 and any(w.get("state") == "READY"
                                         for w in json.loads(r.stdout).get("workers", [])):
                break
            if time.time() > deadline:
                fail("the worker did not register: " + r.stdout + r.stderr)
            time.sleep(0.1)

        r = subprocess.run([sys.executable, CLIENT, "--coordinator", addr, "submit", spec, "--set",
                            "train.epochs=1", "--watch"], capture_output=True, text=True, env=env, timeout=90)
        print(r.stdout + r.stderr)
        if r.returncode != 0:
            fail("submit --watch exited %d" % r.returncode)
        if "j-1 SUCCEEDED" not in r.stdout or "test accuracy 0.8750" not in r.stdout:
            fail("no SUCCEEDED line with the accuracy")
        if "j-1 RUNNING" not in r.stdout:
            fail("the watch did not show the job running")

        with open(spec, "w") as f:
            f.write("name: py-bad\nworkers: 1\ntrain: {batch_size: -4}\n")
        r = subprocess.run([sys.executable, CLIENT, "--coordinator", addr, "submit", spec],
                           capture_output=True, text=True, env=env, timeout=30)
        print(r.stdout + r.stderr)
        if r.returncode != 2 or "INVALID_ARGUMENT" not in r.stderr or "train.batch_size" not in r.stderr:
            fail("a bad spec must be INVALID_ARGUMENT naming train.batch_size")
        print("PASS")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
