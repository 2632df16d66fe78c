"""CRR rewards and GRPO advantages (crpo-method.md section 5) as PyTorch eager ops, vectorised over
groups: the reference a PyTorch user would write. Reads the inputs bench/pytorch/crr.bench.ts
wrote, checks nothing itself, writes its outputs for the caller to compare, and times itself.

usage: python3 crr_reference.py <dir> <groups> <G> <G'> <runs>
"""
import json
import sys
import time

import numpy as np
import torch


def crr(a, c, y, rel, ycf, k, f, g, w, eps=1e-6):
    # a: (B, G) c: (B, H) int64; y, rel, ycf, k: (B,); f: (B, G), g: (B, H) float32
    valid_o = (a >= 0) & (a < k[:, None])
    correct = (valid_o & (a == y[:, None])).float()
    valid_c = (c >= 0) & (c < k[:, None])
    same = valid_c & (c == y[:, None])
    change_label = valid_c & (c == ycf[:, None])
    change_any = valid_c & (c != y[:, None])
    change = torch.where((ycf >= 0)[:, None], change_label, change_any)
    expected = torch.where((rel == 0)[:, None], same, change).float()
    p_o = correct.mean(1, keepdim=True)
    p_c = expected.mean(1, keepdim=True)
    r = w["accuracy"] * correct + w["format"] * f + w["crr"] * correct * p_c
    s = w["behave"] * expected + w["format"] * g + w["crr"] * expected * p_o
    return r, s, normalise(r, eps), normalise(s, eps)


def normalise(x, eps):
    flat = (x == x[:, :1]).all(1, keepdim=True)
    adv = (x - x.mean(1, keepdim=True)) / (x.std(1, unbiased=True, keepdim=True) + eps)
    return torch.where(flat, torch.zeros_like(adv), adv)


def main():
    d, B, G, H, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(1)
    load = lambda name, dtype, shape: torch.from_numpy(np.fromfile(f"{d}/{name}.bin", dtype=dtype).reshape(shape))
    a = load("origAnswers", np.int32, (B, G)).long()
    c = load("cfAnswers", np.int32, (B, H)).long()
    y = load("truth", np.int32, (B,)).long()
    rel = load("relation", np.int32, (B,)).long()
    ycf = load("cfLabel", np.int32, (B,)).long()
    k = load("numOptions", np.int32, (B,)).long()
    f = load("origFormat", np.float32, (B, G))
    g = load("cfFormat", np.float32, (B, H))
    w = {"accuracy": 1.0, "format": 1.0, "crr": 1.0, "behave": 1.0}
    for _ in range(3):
        out = crr(a, c, y, rel, ycf, k, f, g, w)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = crr(a, c, y, rel, ycf, k, f, g, w)
        times.append((time.perf_counter() - t0) * 1e3)
    for name, t in zip(["origReward", "cfReward", "origAdvantage", "cfAdvantage"], out):
        t.contiguous().numpy().astype(np.float32).tofile(f"{d}/torch_{name}.bin")
    times.sort()
    print(json.dumps({"medianMs": times[len(times) // 2], "minMs": times[0], "runs": runs,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
