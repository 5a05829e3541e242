#!/usr/bin/python3
"""Defines a small residual CNN for 28x28 grey images and exports it as TorchScript for tern.

    /usr/bin/python3 examples/export_resnet.py                  # examples/out/resnet.pt
    /usr/bin/python3 examples/export_resnet.py --width 32 --out /tmp/resnet32.pt

The model: a 3x3 stem convolution, three residual blocks (two 3x3 convolutions with BatchNorm
each; the 2nd and 3rd halve the resolution and double the channels, with a 1x1 projection on
the shortcut), global average pooling and a linear layer to 10 classes.
forward(inputs: float32 [B, 1, 28, 28]) returns logits [B, 10], which is what tern's
`loss: cross_entropy` takes with `data.source: tensors` (targets int64 [B]); the Fashion-MNIST
files of examples/fmnist_to_safetensors.py hold exactly that.

The module has buffers besides its parameters: BatchNorm's running mean and variance (and
its batch counter). It is saved in training mode; tern switches it to eval mode to evaluate.

Weights are initialised from --seed (PyTorch's default initialisation), so the same flags give
the same file. The script saves the scripted model, loads the file back and checks that it
gives the same logits in eval and in training mode; it exits 1 when it does not.
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


class ResidualBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)); stride 2 halves the resolution."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))
        else:
            self.shortcut = nn.Sequential()  # identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, width: int, classes: int):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.block1 = ResidualBlock(width, width, 1)          # 28x28
        self.block2 = ResidualBlock(width, 2 * width, 2)      # 14x14
        self.block3 = ResidualBlock(2 * width, 4 * width, 2)  # 7x7
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 4 or inputs.size(1) != 1:
            raise ValueError("SmallResNet expects float images of shape [B, 1, H, W]")
        x = F.relu(self.bn(self.stem(inputs)))
        x = self.block3(self.block2(self.block1(x)))
        x = x.mean(dim=[2, 3])  # global average pooling
        return self.fc(x)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=16, help="channels of the stem and first block")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=1, help="seed of the initial weights")
    p.add_argument("--out", default=os.path.join("examples", "out", "resnet.pt"))
    a = p.parse_args(argv)
    if a.width < 1 or a.classes < 1:
        p.error("--width and --classes must be >= 1")

    torch.manual_seed(a.seed)
    model = SmallResNet(a.width, a.classes)
    n_params = sum(p.numel() for p in model.parameters())
    n_buffers = sum(b.numel() for b in model.buffers())
    print("resnet: width %d, %d classes: %d parameters, %d buffer elements (BatchNorm)"
          % (a.width, a.classes, n_params, n_buffers))

    model.train()
    scripted = save_scripted(model, a.out, "resnet")
    if scripted is None:
        return 1

    # Check the file: load it back and compare logits with the scripted and the Python model,
    # in eval mode (running statistics) first, then in training mode (batch statistics; this
    # updates the running statistics, which is why it comes last — the file is already saved).
    loaded = torch.jit.load(a.out)
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(a.seed + 1))
    for mode in ("eval", "train"):
        for m in (model, scripted, loaded):
            m.train(mode == "train")
        with torch.no_grad():
            want, got_scripted, got_loaded = model(x), scripted(x), loaded(x)
        if tuple(got_loaded.shape) != (8, a.classes):
            print("resnet: loaded module returns shape %s, expected %s"
                  % (tuple(got_loaded.shape), (8, a.classes)), file=sys.stderr)
            return 1
        if not torch.equal(got_loaded, got_scripted):
            print("resnet: %s loaded back gives different logits (%s mode) than the scripted module "
                  "(max |diff| %g)" % (a.out, mode, (got_loaded - got_scripted).abs().max().item()),
                  file=sys.stderr)
            return 1
        if not torch.allclose(got_loaded, want, rtol=1e-5, atol=1e-6):
            print("resnet: %s gives different logits (%s mode) than the Python model (max |diff| %g)"
                  % (a.out, mode, (got_loaded - want).abs().max().item()), file=sys.stderr)
            return 1

    # The cost tern pays per step: one forward + backward of a batch of 64 (1 thread here).
    loaded = torch.jit.load(a.out)
    x = torch.randn(64, 1, 28, 28)
    y = torch.randint(0, a.classes, (64,))
    for i in range(4):
        if i == 1:
            start = time.perf_counter()
        F.cross_entropy(loaded(x), y).backward()
    step_ms = (time.perf_counter() - start) / 3 * 1000
    print("resnet: wrote %s (%d bytes); loads back with the same logits (eval and train mode); "
          "forward+backward of 64 images: %.1f ms on %d thread(s)"
          % (a.out, os.path.getsize(a.out), step_ms, torch.get_num_threads()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
