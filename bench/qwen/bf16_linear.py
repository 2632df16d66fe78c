"""Where the time of a bf16 Qwen2.5-VL-3B layer goes on this CPU, through the libtorch crpo links
(Debian's python3-torch is the same libtorch 1.13): one MLP linear (2048 -> 11008) in fp32, in bf16,
and upcasting its bf16 weight to fp32 at use (what a "bf16 storage, fp32 compute" path would pay
per call); then one decoder layer (eager attention, 16 heads / 2 KV heads, SwiGLU 11008) forward +
backward in fp32 and in bf16. Medians of 3 (1 for the slow bf16 cases) after one warm-up, ms.

  /usr/bin/python3 bench/qwen/bf16_linear.py        # 2 threads, as crpo runs
"""

import statistics
import time

import torch

torch.set_num_threads(2)
H, I, NH, KV, HD = 2048, 11008, 16, 2, 128


def ms(f, n=3):
    f()
    out = []
    for _ in range(n):
        s = time.perf_counter()
        f()
        out.append(1000 * (time.perf_counter() - s))
    return statistics.median(out)


def rms(x, w):
    h = x.float()
    return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)


def layer(x, W):
    B, L, _ = x.shape
    lin = torch.nn.functional.linear
    h = rms(x, W["n1"])
    q = lin(h, W["q"], W["qb"]).view(B, L, NH, HD).transpose(1, 2)
    k = lin(h, W["k"], W["kb"]).view(B, L, KV, HD).transpose(1, 2)
    v = lin(h, W["v"], W["vb"]).view(B, L, KV, HD).transpose(1, 2)
    k = k.unsqueeze(2).expand(B, KV, NH // KV, L, HD).reshape(B, NH, L, HD)
    v = v.unsqueeze(2).expand(B, KV, NH // KV, L, HD).reshape(B, NH, L, HD)
    w = torch.softmax((q @ k.transpose(2, 3) * HD**-0.5).float(), -1).to(q.dtype)
    y = x + lin((w @ v).transpose(1, 2).reshape(B, L, -1), W["o"])
    h2 = rms(y, W["n2"])
    return y + lin(torch.nn.functional.silu(lin(h2, W["gate"])) * lin(h2, W["up"]), W["down"])


def main():
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    w32 = torch.randn(I, H) * 0.02
    w16 = w32.bfloat16()
    print("| tokens | fp32 linear | bf16 linear | upcast bf16 weight | upcast + fp32 linear |")
    print("| --- | --- | --- | --- | --- |")
    for L in (1, 64, 256):
        x32 = torch.randn(L, H)
        x16 = x32.bfloat16()
        f = torch.nn.functional.linear
        a = ms(lambda: f(x32, w32))
        b = ms(lambda: f(x16, w16))
        c = ms(lambda: w16.float())
        d = ms(lambda: f(x32, w16.float()))
        print(f"| {L} | {a:.1f} | {b:.1f} | {c:.1f} | {d:.1f} |")
    shapes = dict(q=(NH * HD, H), k=(KV * HD, H), v=(KV * HD, H), o=(H, NH * HD), gate=(I, H), up=(I, H), down=(H, I))
    print("| decoder layer, 128 tokens | forward | backward |")
    print("| --- | --- | --- |")
    for dt in (torch.float32, torch.bfloat16):
        g = torch.Generator().manual_seed(0)
        W = {n: (torch.randn(*s, generator=g) * 0.02).to(dt) for n, s in shapes.items()}
        W.update(qb=torch.zeros(NH * HD, dtype=dt), kb=torch.zeros(KV * HD, dtype=dt), vb=torch.zeros(KV * HD, dtype=dt))
        W.update(n1=torch.ones(H, dtype=dt), n2=torch.ones(H, dtype=dt))
        x = torch.randn(1, 128, H).to(dt).requires_grad_()
        fw, bw = [], []
        for _ in range(3):
            s = time.perf_counter()
            y = layer(x, W)
            m = time.perf_counter()
            y.float().sum().backward()
            fw.append(1000 * (m - s))
            bw.append(1000 * (time.perf_counter() - m))
        print(f"| {str(dt).replace('torch.', '')} | {statistics.median(fw):.0f} | {statistics.median(bw):.0f} |")


if __name__ == "__main__":
    main()
