#!/usr/bin/python3
"""Trains the exported language model in plain PyTorch the way tern's tinylm job does, to pick
a learning rate and a number of steps before a distributed run.

    /usr/bin/python3 examples/lm_sgd_trial.py --lr 0.25 --steps 160   # after export + make-tokens

One process stands for all workers: the global batch (--batch, default 32 = 4 workers x 8) of
--block-token windows at random offsets of the training file, next-token targets, SGD with
momentum, a linear warm-up over --warmup steps then cosine to 0 (tern's lr_schedule cosine with
lr_min 0). Prints the running training loss and the test loss (nats per token) on --eval-windows
windows spread evenly over the test file, 8 times over the run. Exits 1 if the loss is not finite.
"""
import argparse
import math
import sys
import time

import numpy as np
import torch
from torch.nn import functional as F


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="examples/out/tinylm.pt")
    p.add_argument("--train", default="data/tinylm/train.u16")
    p.add_argument("--test", default="data/tinylm/test.u16")
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.25)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--steps", type=int, default=160)
    p.add_argument("--batch", type=int, default=32, help="global batch: workers x train.batch_size")
    p.add_argument("--warmup", type=int, default=16)
    p.add_argument("--eval-windows", type=int, default=64)
    p.add_argument("--seed", type=int, default=7, help="seed of the sampled offsets")
    a = p.parse_args(argv)
    if a.steps < 8 or a.batch < 1 or a.block < 1 or a.eval_windows < 1:
        p.error("--steps must be >= 8; --batch, --block and --eval-windows >= 1")
    torch.set_num_threads(1)  # as one tern rank (train.threads 1)

    def tokens(path):
        try:
            ids = torch.from_numpy(np.fromfile(path, dtype="<u2").astype(np.int64))
        except OSError as e:
            sys.exit("lm_sgd_trial: cannot read %s: %s (run scripts/make-tokens.sh)" % (path, e.strerror))
        if ids.numel() <= a.block + 1:
            sys.exit("lm_sgd_trial: %s holds %d tokens, not more than a block of %d"
                     % (path, ids.numel(), a.block))
        if int(ids.max()) >= a.vocab:
            sys.exit("lm_sgd_trial: %s has token %d >= --vocab %d" % (path, int(ids.max()), a.vocab))
        return ids

    train, test = tokens(a.train), tokens(a.test)
    try:
        model = torch.jit.load(a.model)
    except (OSError, RuntimeError, ValueError) as e:
        sys.exit("lm_sgd_trial: cannot load %s as TorchScript: %s (run examples/export_tinylm.py)"
                 % (a.model, str(e).splitlines()[0] if str(e) else type(e).__name__))
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    gen = torch.Generator().manual_seed(a.seed)
    starts = torch.linspace(0, test.numel() - a.block - 1, a.eval_windows).long()
    ex = torch.stack([test[s:s + a.block] for s in starts])
    ey = torch.stack([test[s + 1:s + a.block + 1] for s in starts])

    def test_loss():
        model.eval()
        with torch.no_grad():
            loss = F.cross_entropy(model(ex).reshape(-1, a.vocab), ey.reshape(-1)).item()
        model.train()
        return loss

    print("lm_sgd_trial: lr %g momentum %g, %d steps of %d x %d tokens, warm-up %d; test loss %.3f"
          % (a.lr, a.momentum, a.steps, a.batch, a.block, a.warmup, test_loss()), flush=True)
    model.train()
    start, running = time.perf_counter(), 0.0
    for step in range(a.steps):
        if step < a.warmup:
            lr = a.lr * (step + 1) / a.warmup
        else:
            lr = 0.5 * a.lr * (1 + math.cos(math.pi * (step - a.warmup) / max(1, a.steps - a.warmup)))
        for group in opt.param_groups:
            group["lr"] = lr
        offsets = torch.randint(0, train.numel() - a.block - 1, (a.batch,), generator=gen)
        x = torch.stack([train[o:o + a.block] for o in offsets])
        y = torch.stack([train[o + 1:o + a.block + 1] for o in offsets])
        loss = F.cross_entropy(model(x).reshape(-1, a.vocab), y.reshape(-1))
        if not math.isfinite(loss.item()):
            print("lm_sgd_trial: loss is %s at step %d: lower --lr" % (loss.item(), step + 1))
            return 1
        opt.zero_grad()
        loss.backward()
        opt.step()
        running = loss.item() if step == 0 else 0.9 * running + 0.1 * loss.item()
        if (step + 1) % (a.steps // 8) == 0 or step + 1 == a.steps:
            print("step %d lr %.3f train loss (ewma) %.3f test loss %.3f  %.0f s"
                  % (step + 1, lr, running, test_loss(), time.perf_counter() - start), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
