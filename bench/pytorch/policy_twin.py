"""PyTorch-Python twin of the native video-language policy (native/torch/model/policy_model.{h,cpp}).

Same modules, same parameter names (so a crpo checkpoint's safetensors loads by name), same maths:
tubelet ViT encoder with learned spatial + temporal positions, 2x2 patch-merging projector,
decoder-only LM (RMSNorm, rotary positions, SwiGLU, grouped-KV attention, KV cache), the
clipped-surrogate + k3-KL loss of crpo-method.md section 6 and AdamW as the native step does it
(decay on matrices only, grad-norm clipping). Written the way a PyTorch user would write it (eager
ops, nn.Module, a Python sampling loop), it is the reference that bench/pytorch/{train-step,
generate}.bench.ts compare the native policy against: first outputs, then speed.

Usage (driven by the benches): python3 policy_twin.py <dir> train|generate|logprobs
  <dir>/config.json     policy config (camelCase as in the JS API) + run settings
  <dir>/weights.safetensors   F32 tensors by parameter name
  <dir>/batch.json + *.bin    frames (uint8), prompts, completions, advantages, old/ref log-probs
Writes check outputs as raw little-endian binaries and prints one JSON line; then (train,
generate) serves timed iterations on stdin so that the bench interleaves them with native ones.
"""
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ------------------------------------------------------------------------------------------------
# safetensors without the safetensors package: 8-byte LE header length, JSON header, raw data
# ------------------------------------------------------------------------------------------------

_DTYPES = {'F32': np.float32, 'F64': np.float64, 'I64': np.int64, 'I32': np.int32, 'U8': np.uint8}


def read_safetensors(path):
    with open(path, 'rb') as f:
        raw = f.read()
    (n,) = struct.unpack('<Q', raw[:8])
    header = json.loads(raw[8:8 + n].decode('utf-8'))
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        if e['dtype'] not in _DTYPES:
            raise ValueError(f'{path}: tensor {name}: unsupported dtype {e["dtype"]}')
        b, end = e['data_offsets']
        arr = np.frombuffer(raw, dtype=_DTYPES[e['dtype']], count=(end - b) // np.dtype(_DTYPES[e['dtype']]).itemsize, offset=base + b)
        out[name] = torch.from_numpy(arr.copy()).reshape(e['shape'])
    return out


# ------------------------------------------------------------------------------------------------
# Modules (names match the C++ register_module / register_parameter calls)
# ------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary_tables(positions, head_dim, theta, dtype):
    """positions (N, L) int64 -> cos, sin (N, 1, L, hd/2); angles in float64 as the native code."""
    half = head_dim // 2
    inv = torch.pow(torch.tensor(theta, dtype=torch.float64), -torch.arange(0, half, dtype=torch.float64) * (2.0 / head_dim))
    ang = positions.to(torch.float64).unsqueeze(-1) * inv
    return ang.cos().to(dtype).unsqueeze(1), ang.sin().to(dtype).unsqueeze(1)


def apply_rotary(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


class Attention(nn.Module):
    def __init__(self, dim, heads, kv_heads):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.wq = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(heads * self.head_dim, dim, bias=False)

    def forward(self, x, cos, sin, allowed, cache=None, start=0):
        N, L, _ = x.shape
        q = self.wq(x).view(N, L, self.heads, self.head_dim).transpose(1, 2)  # (N, H, L, hd)
        k = self.wk(x).view(N, L, self.kv_heads, self.head_dim).transpose(1, 2)  # (N, Hkv, L, hd)
        v = self.wv(x).view(N, L, self.kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
        if cache is not None:
            cache[0][:, :, start:start + L] = k
            cache[1][:, :, start:start + L] = v
            k = cache[0][:, :, :start + L]
            v = cache[1][:, :, :start + L]
        if self.heads != self.kv_heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, 1)
            v = v.repeat_interleave(self.heads // self.kv_heads, 1)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (N, H, L, Lk)
        scores = scores.masked_fill(~allowed, -1e9)
        attn = torch.softmax(scores, -1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(N, L, self.heads * self.head_dim)
        return self.wo(out)


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class DecoderLayer(nn.Module):
    def __init__(self, dim, heads, kv_heads, mlp, eps):
        super().__init__()
        self.attn_norm = RMSNorm(dim, eps)
        self.attn = Attention(dim, heads, kv_heads)
        self.mlp_norm = RMSNorm(dim, eps)
        self.mlp = SwiGLU(dim, mlp)

    def forward(self, x, cos, sin, allowed, cache=None, start=0):
        h = x + self.attn(self.attn_norm(x), cos, sin, allowed, cache, start)
        return h + self.mlp(self.mlp_norm(h))


class LanguageModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dim, self.heads, self.kv_heads, self.theta = c['lmDim'], c['lmHeads'], c['lmKvHeads'], c['ropeTheta']
        self.embed = nn.Embedding(c['vocabSize'], c['lmDim'])
        self.layers = nn.ModuleList([DecoderLayer(c['lmDim'], c['lmHeads'], c['lmKvHeads'], c['lmMlp'], c['normEps']) for _ in range(c['lmLayers'])])
        self.norm = RMSNorm(c['lmDim'], c['normEps'])
        self.head = nn.Linear(c['lmDim'], c['vocabSize'], bias=False)

    def forward(self, embeds, positions, key_valid, cache=None, start=0):
        """embeds (N, L, D) at columns [start, start+L); key_valid (N, start+L) bool -> hidden (N, L, D)."""
        N, L, _ = embeds.shape
        Lk = start + L
        cos, sin = rotary_tables(positions, self.dim // self.heads, self.theta, embeds.dtype)
        causal = torch.arange(Lk).unsqueeze(0) <= torch.arange(start, start + L).unsqueeze(1)  # (L, Lk)
        allowed = causal.view(1, 1, L, Lk) & key_valid.view(N, 1, 1, Lk)
        h = embeds
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, allowed, cache[i] if cache is not None else None, start)
        return self.norm(h)

    def make_cache(self, n, capacity, dtype):
        hd = self.dim // self.heads
        return [(torch.zeros(n, self.kv_heads, capacity, hd, dtype=dtype), torch.zeros(n, self.kv_heads, capacity, hd, dtype=dtype)) for _ in self.layers]


class VisionBlock(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x):  # (M, P, D)
        M, P, D = x.shape
        hd = D // self.heads
        qkv = self.qkv(self.norm1(x)).view(M, P, 3, self.heads, hd).permute(2, 0, 3, 1, 4)  # (3, M, H, P, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hd)), -1)
        o = torch.matmul(attn, v).transpose(1, 2).reshape(M, P, D)
        h = x + self.proj(o)
        return h + self.fc2(F.gelu(self.fc1(self.norm2(h))))


class VisionEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.frames, self.image, self.channels = c['frames'], c['imageSize'], c['channels']
        self.patch, self.tpatch, self.dim = c['patchSize'], c['temporalPatch'], c['visionDim']
        g = self.image // self.patch
        self.patch_embed = nn.Linear(self.tpatch * self.patch * self.patch * self.channels, self.dim)
        self.spatial_pos = nn.Parameter(torch.zeros(g * g, self.dim))
        self.temporal_pos = nn.Parameter(torch.zeros(self.frames // self.tpatch, self.dim))
        self.blocks = nn.ModuleList([VisionBlock(self.dim, c['visionHeads'], c['visionMlp']) for _ in range(c['visionLayers'])])
        self.norm = nn.LayerNorm(self.dim, eps=1e-6)
        # Attention over all tubelets of a clip (default) or within each frame group.
        self.clip_attention = bool(c.get('visionClipAttention', False))

    def forward(self, pixels):
        """pixels (M, T, H, W, C) in [-1, 1] -> (M, T', P, D)."""
        M = pixels.shape[0]
        g, Tg = self.image // self.patch, self.frames // self.tpatch
        P, p, tp, C, D = g * g, self.patch, self.tpatch, self.channels, self.dim
        x = pixels.reshape(M, Tg, tp, g, p, g, p, C).permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(M * Tg, P, tp * p * p * C)
        x = self.patch_embed(x).view(M, Tg, P, D) + self.spatial_pos.view(1, 1, P, D) + self.temporal_pos.view(1, Tg, 1, D)
        x = x.reshape(M, Tg * P, D) if self.clip_attention else x.reshape(M * Tg, P, D)
        for b in self.blocks:
            x = b(x)
        return self.norm(x).view(M, Tg, P, D)


class Projector(nn.Module):
    def __init__(self, vision_dim, lm_dim, grid, merge):
        super().__init__()
        self.grid, self.merge = grid, merge
        d = vision_dim * merge * merge
        self.norm = nn.LayerNorm(vision_dim, eps=1e-6)
        self.fc1 = nn.Linear(d, d)
        self.fc2 = nn.Linear(d, lm_dim)

    def forward(self, x):  # (M, T', P, Dv) -> (M, T'*P/merge^2, Dl)
        M, Tg, _, D = x.shape
        m, gm = self.merge, self.grid // self.merge
        h = self.norm(x).reshape(M, Tg, gm, m, gm, m, D).permute(0, 1, 2, 4, 3, 5, 6).reshape(M, Tg * gm * gm, m * m * D)
        return self.fc2(F.gelu(self.fc1(h)))


class PolicyNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.vision = VisionEncoder(c)
        self.projector = Projector(c['visionDim'], c['lmDim'], c['imageSize'] // c['patchSize'], c['mergeSize'])
        self.lm = LanguageModel(c)


# ------------------------------------------------------------------------------------------------
# Batches: P prompts over V videos, each with a transform; G completions per prompt
# ------------------------------------------------------------------------------------------------


def transform_clip(clip, op):
    """clip (T, H, W, C) uint8; op in none | hflip | reverse | hflip+reverse."""
    if op in ('hflip', 'hflip+reverse'):
        clip = clip.flip(2)
    if op in ('reverse', 'hflip+reverse'):
        clip = clip.flip(0)
    return clip


class Twin:
    def __init__(self, cfg, weights):
        self.cfg = cfg
        self.net = PolicyNet(cfg)
        missing = set(dict(self.net.named_parameters())) ^ set(weights)
        if missing:
            raise ValueError(f'weights and twin disagree on names: {sorted(missing)[:8]}')
        with torch.no_grad():
            for n, p in self.net.named_parameters():
                if tuple(p.shape) != tuple(weights[n].shape):
                    raise ValueError(f'{n}: shape {tuple(weights[n].shape)}, twin expects {tuple(p.shape)}')
                p.copy_(weights[n])
        self.params = list(self.net.parameters())
        self.names = [n for n, _ in self.net.named_parameters()]
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.step = 0

    def encode_visual(self, frames, video, ops):
        """Visual tokens (P, Nv, D); the encoder runs once per unique (video, transform)."""
        keys, which = [], []
        for v, o in zip(video, ops):
            k = (v, o)
            if k not in keys:
                keys.append(k)
            which.append(keys.index(k))
        clips = torch.stack([transform_clip(frames[v], o) for v, o in keys])
        pixels = clips.to(torch.float32).div_(127.5).sub_(1.0)
        vis = self.net.projector(self.net.vision(pixels))
        return vis[torch.tensor(which)]

    def prefix(self, b):
        vis = self.encode_visual(b['frames'], b['video'], b['ops'])
        P, Nv = vis.shape[0], vis.shape[1]
        Lp = max(len(x) for x in b['ids'])
        ids = torch.full((P, Lp), self.cfg.get('padId', 0), dtype=torch.long)
        vt = torch.zeros(P, Lp, dtype=torch.bool)
        for p, x in enumerate(b['ids']):
            ids[p, Lp - len(x):] = torch.tensor(x, dtype=torch.long)
            vt[p, Lp - len(x):] = True
        embeds = torch.cat([vis, self.net.lm.embed(ids)], 1)
        valid = torch.cat([torch.ones(P, Nv, dtype=torch.bool), vt], 1)
        cum = valid.long().cumsum(1)
        return embeds, valid, (cum - 1).clamp_min(0), cum[:, -1]

    def completion_logits(self, b, comp_ids):
        G, C = b['group'], comp_ids.shape[1]
        embeds, valid, pos, next_pos = self.prefix(b)
        Lpre = embeds.shape[1]
        emb = torch.cat([embeds.repeat_interleave(G, 0), self.net.lm.embed(comp_ids)], 1)  # (N, Lpre+C, D)
        N = emb.shape[0]
        valid = torch.cat([valid.repeat_interleave(G, 0), torch.ones(N, C, dtype=torch.bool)], 1)
        cpos = next_pos.repeat_interleave(G, 0).unsqueeze(1) + torch.arange(C).unsqueeze(0)
        pos = torch.cat([pos.repeat_interleave(G, 0), cpos], 1)
        hidden = self.net.lm(emb, pos, valid)
        return self.net.lm.head(hidden[:, Lpre - 1:Lpre - 1 + C])  # (N, C, V)

    # -- section 6 loss + AdamW ------------------------------------------------------------------

    @staticmethod
    def policy_loss(logp, old, ref, adv, mask, o):
        ratio = torch.exp(logp - old)
        A = adv.unsqueeze(1)
        l1 = -ratio * A
        l2 = -torch.clamp(ratio, 1.0 - o['clipLow'], 1.0 + o['clipHigh']) * A
        clip = torch.max(l1, l2)
        d = torch.clamp(ref - logp, -10.0, 10.0)
        kl = torch.exp(d) - d - 1.0
        x = clip + o['beta'] * kl
        return ((x * mask).sum(1) / mask.sum(1).clamp_min(1.0)).mean()  # seq-mean-token-mean

    def train_step(self, b, comp, o, apply=True):
        self.net.train()
        for p in self.params:
            p.grad = None
        ids, lengths = comp['ids'], comp['lengths']
        C = ids.shape[1]
        mask = (torch.arange(C).unsqueeze(0) < lengths.unsqueeze(1)).to(torch.float32)
        lsm = torch.log_softmax(self.completion_logits(b, ids) / o['temperature'], -1)
        logp = lsm.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            entropy = ((-(lsm.exp() * lsm).sum(-1) * mask).sum() / mask.sum().clamp_min(1.0)).item()
        loss = self.policy_loss(logp, comp['old'], comp['ref'], comp['adv'], mask, o)
        loss_value = loss.item()
        loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        with torch.no_grad():
            gnorm = math.sqrt(sum(g.double().pow(2).sum().item() for g in grads))
            raw = [g.clone() for g in grads] if not apply else None
            if apply:
                if o['maxGradNorm'] > 0 and gnorm > o['maxGradNorm']:
                    s = o['maxGradNorm'] / (gnorm + 1e-6)
                    for g in grads:
                        g.mul_(s)
                self.step += 1
                lr, b1, b2, eps, wd = o['lr'], o['beta1'], o['beta2'], o['adamEps'], o['weightDecay']
                bc1, bc2 = 1.0 - b1 ** self.step, 1.0 - b2 ** self.step
                for p, g, m, v in zip(self.params, grads, self.exp_avg, self.exp_avg_sq):
                    if wd > 0 and p.dim() >= 2:
                        p.mul_(1.0 - lr * wd)
                    m.mul_(b1).add_(g, alpha=1.0 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                    denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)
                    p.addcdiv_(m, denom, value=-lr / bc1)
        for p in self.params:
            p.grad = None
        return {'loss': loss_value, 'gradNorm': gnorm, 'entropy': entropy}, raw

    # -- generation --------------------------------------------------------------------------------

    @torch.no_grad()
    def logprobs(self, b, comp):
        self.net.eval()
        ids, lengths = comp['ids'], comp['lengths']
        mask = (torch.arange(ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).to(torch.float32)
        lsm = torch.log_softmax(self.completion_logits(b, ids), -1)
        return lsm.gather(-1, ids.unsqueeze(-1)).squeeze(-1) * mask

    @torch.no_grad()
    def generate(self, b, max_new, temperature=1.0, greedy=False, stop=(), gen=None):
        """KV-cached sampling: prefill once per prompt, copy the cache G times, one token per step."""
        self.net.eval()
        lm, G, T = self.net.lm, b['group'], max_new
        embeds, valid, pos, next_pos = self.prefix(b)
        P, Lpre = embeds.shape[0], embeds.shape[1]
        N = P * G
        pad = self.cfg.get('padId', 0)
        tokens = torch.full((N, T), pad, dtype=torch.long)
        logps = torch.zeros(N, T)
        lengths = torch.zeros(N, dtype=torch.long)
        finished = torch.zeros(N, dtype=torch.bool)
        next_pos = next_pos.repeat_interleave(G, 0)
        cache = lm.make_cache(P, Lpre + T, embeds.dtype)
        h = lm(embeds, pos, valid, cache, 0)  # prefill
        cache = [(k.repeat_interleave(G, 0), v.repeat_interleave(G, 0)) for k, v in cache]
        key_valid = torch.cat([valid.repeat_interleave(G, 0), torch.zeros(N, T, dtype=torch.bool)], 1)
        logits = lm.head(h[:, Lpre - 1]).repeat_interleave(G, 0)
        for s in range(T):
            lf = logits / temperature
            lsm = torch.log_softmax(lf, -1)
            if greedy:
                tok = lf.argmax(-1)
            else:
                tok = torch.multinomial(torch.softmax(lf, -1), 1, generator=gen).squeeze(1)
            lp = lsm.gather(-1, tok.unsqueeze(-1)).squeeze(-1)
            tok = tok.masked_fill(finished, pad)
            lp = lp.masked_fill(finished, 0.0)
            tokens[:, s] = tok
            logps[:, s] = lp
            lengths += (~finished).long()
            for st in stop:
                finished = finished | (tok == st)
            if s + 1 == T or bool(finished.all()):
                break
            key_valid[:, Lpre + s] = True
            h = lm(lm.embed(tok.unsqueeze(1)), (next_pos + s).unsqueeze(1), key_valid[:, :Lpre + s + 1], cache, Lpre + s)
            logits = lm.head(h[:, 0])
        return tokens, logps, lengths


# ------------------------------------------------------------------------------------------------
# Bench driver
# ------------------------------------------------------------------------------------------------


def load_batch(d, cfg):
    with open(os.path.join(d, 'batch.json')) as f:
        bj = json.load(f)
    V, T, S, C = bj['numVideos'], cfg['frames'], cfg['imageSize'], cfg['channels']
    frames = torch.from_numpy(np.fromfile(os.path.join(d, 'frames.bin'), dtype=np.uint8).copy()).reshape(V, T, S, S, C)
    b = {'frames': frames, 'video': bj['video'], 'ops': bj['ops'], 'ids': bj['ids'], 'group': bj['group']}
    comp = None
    if 'width' in bj:
        N, W = len(bj['ids']) * bj['group'], bj['width']
        rd = lambda name, dt: torch.from_numpy(np.fromfile(os.path.join(d, name), dtype=dt).copy())
        comp = {'ids': rd('comp_ids.bin', np.int32).long().reshape(N, W), 'lengths': rd('comp_lengths.bin', np.int32).long()}
        if os.path.exists(os.path.join(d, 'adv.bin')):
            comp['adv'] = rd('adv.bin', np.float32)
            comp['old'] = rd('old.bin', np.float32).reshape(N, W)
            comp['ref'] = rd('ref.bin', np.float32).reshape(N, W)
    return b, comp, bj


def serve(step):
    """Timed iterations on request, so that the caller can interleave them with its own:
    reads 'run' (one iteration; prints {"ms": ...}), 'threads N' or 'quit' from stdin."""
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == 'quit':
            break
        if cmd[0] == 'threads':
            torch.set_num_threads(int(cmd[1]))
            print(json.dumps({'threads': torch.get_num_threads()}), flush=True)
        elif cmd[0] == 'run':
            t0 = time.perf_counter()
            step()
            print(json.dumps({'ms': (time.perf_counter() - t0) * 1e3}), flush=True)
        else:
            raise SystemExit(f'unknown command {cmd[0]!r}')


def main():
    d, mode = sys.argv[1], sys.argv[2]
    with open(os.path.join(d, 'config.json')) as f:
        cfg = json.load(f)
    run = cfg.pop('run', {})
    torch.set_num_threads(int(run.get('threads', 1)))
    twin = Twin(cfg, read_safetensors(os.path.join(d, 'weights.safetensors')))
    b, comp, bj = load_batch(d, cfg)
    res = {'torch': torch.__version__, 'threads': torch.get_num_threads(), 'parameters': sum(p.numel() for p in twin.params)}
    if mode == 'logprobs':
        twin.logprobs(b, comp).numpy().astype(np.float32).tofile(os.path.join(d, 'py_logprobs.bin'))
        print(json.dumps(res), flush=True)
    elif mode == 'train':
        o = run['step']
        # Check first: loss and raw gradients of the first step (no update), by parameter name.
        stats, grads = twin.train_step(b, comp, o, apply=False)
        res['check'] = stats
        with open(os.path.join(d, 'py_grads.bin'), 'wb') as f:
            for g in grads:
                f.write(g.numpy().astype(np.float32).tobytes())
        res['gradNames'] = twin.names
        res['gradShapes'] = [list(p.shape) for p in twin.params]
        print(json.dumps(res), flush=True)
        serve(lambda: twin.train_step(b, comp, o))
    elif mode == 'generate':
        toks, lps, lens = twin.generate(b, run['maxNewTokens'], greedy=True)
        toks.numpy().astype(np.int32).tofile(os.path.join(d, 'py_greedy_tokens.bin'))
        lps.numpy().astype(np.float32).tofile(os.path.join(d, 'py_greedy_logprobs.bin'))
        print(json.dumps(res), flush=True)
        gen = torch.Generator().manual_seed(1234)
        serve(lambda: twin.generate(b, run['maxNewTokens'], temperature=run['temperature'], gen=gen))
    else:
        raise SystemExit(f'unknown mode {mode!r} (train | generate | logprobs)')


if __name__ == '__main__':
    main()
