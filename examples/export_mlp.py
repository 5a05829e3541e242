#!/usr/bin/python3
"""Exports tern's built-in MLP (model.type mlp) as TorchScript, for comparing the two paths.

    /usr/bin/python3 examples/export_mlp.py                     # examples/out/mlp.pt

The same network as src/trainer/workloads/image/models.cc: the input [B, 1, 28, 28] flattened
to [B, 784], then fc1 784->512, ReLU, fc2 512->256, ReLU, fc3 256->10, with the same parameter
names (fc1.weight, fc1.bias, ..., fc3.bias) in the same order. The layers are built in the same
order with nn.Linear's default initialisation after torch.manual_seed(--seed), as the built-in
MLP is after torch::manual_seed(train.seed), and both draw from the same CPU generator: with
Debian's python3-torch 1.13 and libtorch 1.13, --seed 1 gives bit-for-bit the initial weights
of the built-in MLP with train.seed 1 (checked against a C++ program that builds it). Another
PyTorch build may differ: a test that needs identical weights can copy them explicitly.

The script saves the scripted model, loads the file back and checks that it gives the same
logits; it exits 1 when it does not.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from jit_save import save_scripted  # noqa: E402
from torch import nn
from torch.nn import functional as F


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 512)
        self.fc2 = nn.Linear(512, 256)
        self.fc3 = nn.Linear(256, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.reshape(inputs.size(0), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=1, help="seed of the initial weights (train.seed)")
    p.add_argument("--out", default=os.path.join("examples", "out", "mlp.pt"))
    a = p.parse_args(argv)

    torch.manual_seed(a.seed)
    model = Mlp()
    names = [n for n, _ in model.named_parameters()]
    n_params = sum(p.numel() for p in model.parameters())
    print("mlp: 784-512-256-10: %d parameters (%s)" % (n_params, ", ".join(names)))

    scripted = save_scripted(model, a.out, "mlp")
    if scripted is None:
        return 1

    loaded = torch.jit.load(a.out)
    if [n for n, _ in loaded.named_parameters()] != names:
        print("mlp: %s loaded back has parameters %s, expected %s"
              % (a.out, [n for n, _ in loaded.named_parameters()], names), file=sys.stderr)
        return 1
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(a.seed + 1))
    with torch.no_grad():
        want, got_scripted, got_loaded = model(x), scripted(x), loaded(x)
    if tuple(got_loaded.shape) != (16, 10):
        print("mlp: loaded module returns shape %s, expected (16, 10)" % (tuple(got_loaded.shape),),
              file=sys.stderr)
        return 1
    if not torch.equal(got_loaded, got_scripted):
        print("mlp: %s loaded back gives different logits than the scripted module (max |diff| %g)"
              % (a.out, (got_loaded - got_scripted).abs().max().item()), file=sys.stderr)
        return 1
    if not torch.allclose(got_loaded, want, rtol=1e-5, atol=1e-6):
        print("mlp: %s gives different logits than the Python model (max |diff| %g)"
              % (a.out, (got_loaded - want).abs().max().item()), file=sys.stderr)
        return 1

    x = torch.randn(32, 1, 28, 28)
    y = torch.randint(0, 10, (32,))
    for i in range(6):
        if i == 1:
            start = time.perf_counter()
        F.cross_entropy(loaded(x), y).backward()
    step_ms = (time.perf_counter() - start) / 5 * 1000
    print("mlp: wrote %s (%d bytes); loads back with the same logits; forward+backward of 32 "
          "images: %.1f ms on %d thread(s)"
          % (a.out, os.path.getsize(a.out), step_ms, torch.get_num_threads()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
