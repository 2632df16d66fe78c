#!/usr/bin/env python3
"""The vision-stem probe of docs/model.md ("Levers, fourth round").

A PyTorch model of the native policy's vision encoder (tiny preset: tubelets of 2 frames, 64 wide,
2 pre-norm blocks of 4 heads, MLP 128, positions N(0, 0.5), clip attention), with a chosen
convolutional stem in front and a linear head on the mean token, trained on shape questions alone
(the clips of make-clips.js): batch 32, AdamW lr 1e-3 with 5% warm-up and cosine decay to 10%,
held-out accuracy every 100 steps. It isolates how fast the encoder learns to see shape, the
slowest skill of `crpo sft`, for a few minutes of CPU per stem instead of a full run.

    python3 scripts/vision-probe/probe.py <clip-dir> <stem> [seed=1] [steps=600]

Stems: none, stem8 (3x3 to 8 channels: `--vision-stem 8`), s16d16 (3x3 to 16, then 3x3 stride 2
to 16: `--vision-stem 16 --vision-stem-down 16`), s16d32, s8d16, s16d32s2x2 (two stride-2
convolutions, 2x2 cells). Needs torch (Debian: python3-torch).
"""
import math
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# name: ([(out channels, stride), ...] of 3x3 convolutions, feature-map cells per patch side)
STEMS = {
    'none': ([], 8),
    'stem8': ([(8, 1)], 8),
    's8d16': ([(8, 1), (16, 2)], 4),
    's16d16': ([(16, 1), (16, 2)], 4),
    's16d32': ([(16, 1), (32, 2)], 4),
    's16d32s2x2': ([(16, 2), (32, 2)], 2),
}
FRAMES, SIDE, TPATCH, DIM = 8, 32, 2, 64


class Block(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x):
        m, p, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(m, p, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), -1)
        x = x + self.proj((a @ v).transpose(1, 2).reshape(m, p, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Encoder(nn.Module):
    def __init__(self, stem, cell):
        super().__init__()
        convs, c, side = [], 3, SIDE
        for out, stride in stem:
            conv = nn.Conv2d(c, out, 3, stride=stride, padding=1)
            nn.init.normal_(conv.weight, 0, math.sqrt(2.0 / (c * 9)))  # He init, as the native stem
            nn.init.zeros_(conv.bias)
            convs.append(conv)
            c, side = out, side // stride
        self.convs, self.channels, self.cell, self.grid = nn.ModuleList(convs), c, cell, side // cell
        self.embed = nn.Linear(TPATCH * cell * cell * c, DIM)
        groups, patches = FRAMES // TPATCH, self.grid * self.grid
        self.spatial = nn.Parameter(torch.randn(patches, DIM) * 0.5)
        self.temporal = nn.Parameter(torch.randn(groups, DIM) * 0.5)
        self.blocks = nn.ModuleList([Block(DIM, 4, 128) for _ in range(2)])
        self.norm, self.head = nn.LayerNorm(DIM, eps=1e-6), nn.Linear(DIM, 4)
        nn.init.normal_(self.embed.weight, 0, 0.08)
        nn.init.zeros_(self.embed.bias)
        for name, p in self.blocks.named_parameters():
            if p.dim() == 2:  # N(0, 0.08), output projections scaled by 1/sqrt(2 x layers)
                nn.init.normal_(p, 0, 0.08 * (0.5 if name.split('.')[-2] in ('proj', 'fc2') else 1.0))

    def forward(self, pixels):
        m, g, c, cell = pixels.shape[0], self.grid, self.channels, self.cell
        f = pixels.reshape(m * FRAMES, SIDE, SIDE, 3).permute(0, 3, 1, 2)
        for conv in self.convs:
            f = F.gelu(conv(f))
        groups = FRAMES // TPATCH
        f = f.permute(0, 2, 3, 1).reshape(m, groups, TPATCH, g, cell, g, cell, c)
        f = f.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(m * groups, g * g, -1)
        x = self.embed(f).view(m, groups, g * g, DIM) + self.spatial.view(1, 1, g * g, DIM)
        x = (x + self.temporal.view(1, groups, 1, DIM)).reshape(m, groups * g * g, DIM)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))


def load(folder, split):
    labels = np.fromfile(f'{folder}/{split}.labels', np.uint8).astype(np.int64)
    frames = np.fromfile(f'{folder}/{split}.frames', np.uint8).reshape(len(labels), FRAMES, SIDE, SIDE, 3)
    return frames, labels


def pixels(a):
    return torch.from_numpy(a).float().div_(127.5).sub_(1.0)  # [-1, 1], as the native policy


def main():
    if len(sys.argv) < 3 or sys.argv[2] not in STEMS:
        sys.exit(f'usage: probe.py <clip-dir> <{"|".join(STEMS)}> [seed] [steps]')
    folder, name = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    steps = int(sys.argv[4]) if len(sys.argv) > 4 else 600
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    train, train_labels = load(folder, 'train')
    test, test_labels = load(folder, 'test')
    model = Encoder(*STEMS[name])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    warm = max(1, steps // 20)
    rng = np.random.default_rng(seed)
    scores, t0 = [], time.time()
    for step in range(steps):
        lr = 1e-3 * ((step + 1) / warm if step < warm else 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warm) / (steps - warm))))
        for group in opt.param_groups:
            group['lr'] = lr
        idx = rng.integers(0, len(train_labels), 32)
        loss = F.cross_entropy(model(pixels(train[idx])), torch.from_numpy(train_labels[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            with torch.no_grad():
                right = sum(int((model(pixels(test[i:i + 100])).argmax(1).numpy() == test_labels[i:i + 100]).sum())
                            for i in range(0, len(test_labels), 100))
            scores.append(f'{step + 1}:{100 * right / len(test_labels):.1f}')
    print(name, f'seed {seed}', ' '.join(scores), f'({(time.time() - t0) / steps * 1000:.0f} ms/step)')


if __name__ == '__main__':
    main()
