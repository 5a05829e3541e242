#!/usr/bin/env python3
# How much of a step's gradient energy a k-vector PCA basis (from the previous step's gradient)
# keeps, for several ways of cutting the CNN's gradient into slices (GradiVeQ, docs/algorithms.md
# §4.5): consecutive values of the flat gradient ("flat") against fc1's 7x7 feature maps (49) and
# conv2's 5x5 kernels (25), and (the step's own basis) fc1 by its columns (slicing matrix) against
# groups of maps. Single process, batch 256, the Fashion-MNIST CNN as tern's, PyTorch
# from Debian (apt install python3-torch; run with /usr/bin/python3).
#   /usr/bin/python3 bench/gradiveq_energy.py   # prints one line per reported step
import gzip, numpy as np, torch, torch.nn as nn, torch.nn.functional as F, sys
torch.manual_seed(1)
root = "/usr/share/datasets/fashion-mnist"
def load(name, off):
    import glob
    p = glob.glob(f"{root}/{name}*")[0]
    data = gzip.open(p).read() if p.endswith(".gz") else open(p, "rb").read()
    return np.frombuffer(data, np.uint8, offset=off)
X = torch.tensor(load("train-images", 16).reshape(-1, 1, 28, 28), dtype=torch.float32) / 255.
X = (X - 0.2860) / 0.3530
Y = torch.tensor(load("train-labels", 8), dtype=torch.long)
class Cnn(nn.Module):
    def __init__(s):
        super().__init__()
        s.conv1 = nn.Conv2d(1, 32, 5, padding=2); s.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        s.fc1 = nn.Linear(3136, 512); s.fc2 = nn.Linear(512, 10)
    def forward(s, x):
        x = F.max_pool2d(F.relu(s.conv1(x)), 2); x = F.max_pool2d(F.relu(s.conv2(x)), 2)
        return s.fc2(F.relu(s.fc1(x.flatten(1))))
m = Cnn(); opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
B = 256  # 4 ranks x 64
def slices_flat(gs, d):
    v = torch.cat([g.flatten() for g in gs]); n = v.numel(); pad = (-n) % d
    return F.pad(v, (0, pad)).view(-1, d)
def slices_per_tensor(gs, dmap):
    out = {}
    for name, g in gs.items():
        d = dmap(name, g)
        if d is None: continue
        v = g.flatten(); pad = (-v.numel()) % d
        out.setdefault(d, []).append(F.pad(v, (0, pad)).view(-1, d))
    return {d: torch.cat(s) for d, s in out.items()}
def basis(S, k):
    c = (S.T @ S).double(); w, v = torch.linalg.eigh(c); return v[:, -k:].float()
def kept(S, U):
    return ((S @ U).pow(2).sum() / S.pow(2).sum()).item()
prev = None
report_steps = {5, 20, 60}
for step in range(61):
    idx = torch.randint(0, X.shape[0], (B,))
    opt.zero_grad(); loss = F.cross_entropy(m(X[idx]), Y[idx]); loss.backward()
    gs = {n: p.grad.detach().clone() for n, p in m.named_parameters()}
    if prev is not None and step in report_steps:
        res = []
        for d, k in [(64, 2), (64, 4), (64, 8), (128, 12)]:
            res.append((f"flat d{d} k{k}", kept(slices_flat(gs.values(), d), basis(slices_flat(prev.values(), d), k))))
        # fc1 weight sliced per input channel (49 = 7x7 map), conv2 per kernel (25), or in 64s
        for k in [1, 2, 4, 8]:
            for layer, d in [("fc1", 49), ("fc1", 64), ("conv2", 25), ("conv2", 64)]:
                dm = lambda n, g: d if n == layer + ".weight" else None
                S, P = slices_per_tensor(gs, dm)[d], slices_per_tensor(prev, dm)[d]
                res.append((f"{layer} d{d} k{k}", kept(S, basis(P, k))))
        # same-step basis (upper bound for fresh basis)
        S = slices_per_tensor(gs, lambda n, g: 49 if n == "fc1.weight" else None)[49]
        res.append(("fc1 d49 k2 same-step", kept(S, basis(S, 2))))
        # slicing matrix: fc1 (512 x 3136) by its 512-value columns, the step's own basis = the
        # gradient's leading left singular vectors; against j 7x7 maps per slice with k = 8 j
        # (the same coefficients per value), also with the step's own basis
        W = gs["fc1.weight"]
        for k in [8, 16, 32]:
            res.append((f"fc1 columns k{k} same-step", kept(W.t(), basis(W.t(), k))))
        for j in [1, 2, 4]:
            S = W.view(512, 64 // j, j * 49).reshape(-1, j * 49)
            res.append((f"fc1 {j} maps k{8 * j} same-step", kept(S, basis(S, 8 * j))))
        print(f"step {step} loss {loss.item():.3f}: " + ", ".join(f"{n} {v:.3f}" for n, v in res), flush=True)
    prev = gs
    opt.step()
