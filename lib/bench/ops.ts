/**
 * `crpo bench ops` and `npm run bench -- ops`: the counterfactual frame ops (hflip / reverse /
 * hflip+reverse / swap on [8,16,224,224,3] uint8) next to a memcpy of the same bytes
 * (TypedArray.set, the physical limit) and a naive per-pixel TS loop, all into preallocated
 * outputs; and the fused CRR reward/advantage kernel (crpo-method.md section 5) against its TS
 * reference (lib/reward/reference.ts) at 1,024 groups of G = G' = 8. On a CUDA device the torch
 * addon's ops run on that device (host arrays in and out, so the copies are part of the time).
 * Medians of >= 5 runs after warm-up, same process, same run.
 */
import { VIDEO_TRANSFORMS } from '../counterfactual/transforms';
import { CrpoError, outOfRange } from '../errors';
import { hasAddon, ops, torchInfo, type AddonName } from '../native';
import { packCrrGroups, referenceCrr, type CrrGroup } from '../reward';
import { fixed, machineInfo, markdownTable, msSince, summarize, type MachineInfo, type SampleStats } from './stats';

export const OPS_SHAPE: readonly number[] = [8, 16, 224, 224, 3];

export interface OpsBenchOptions {
  /** 'cpu' (both addons) or 'cuda[:N]' (the torch addon on that device). */
  device?: string;
  /** Timed runs per op (>= 5). */
  runs?: number;
}

export interface OpRow extends SampleStats {
  op: string;
  addon: AddonName | '-';
  device: string;
  GBs: number;
  vsMemcpy: number;
  /** Speed-up over the naive TS loop (same transform; hflip+reverse against hflip). */
  vsNaive: number;
}

export interface CrrRow extends SampleStats {
  impl: string;
  speedup: number;
  /** Largest absolute difference of the advantages from the TS reference. */
  maxAbsDiff: number;
}

export interface OpsBenchResult {
  machine: MachineInfo;
  device: string;
  shape: number[];
  bytes: number;
  memcpy: SampleStats & { GBs: number };
  naive: Record<string, SampleStats>;
  ops: OpRow[];
  crr: { groups: number; perBranch: number; results: CrrRow[] };
}

/** Times `fn`: `warmup` untimed calls, then `runs` timed ones. */
export function timeSync(fn: () => void, warmup: number, runs: number): SampleStats {
  for (let i = 0; i < warmup; i++) fn();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    samples.push(msSince(t0));
  }
  return summarize(samples);
}

/** The straightforward JS loop a user would write: per pixel, per channel. */
export function naiveTransform(input: Uint8Array, out: Uint8Array, shape: readonly number[], transform: string): void {
  const [B, T, H, W, C] = shape;
  const row = W * C,
    frame = H * row;
  const half = Math.floor(T / 2),
    tail = T - half;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const st = transform === 'reverse' ? T - 1 - t : transform === 'swap' ? (t < tail ? t + half : t - tail) : t;
      const src = (b * T + st) * frame,
        dst = (b * T + t) * frame;
      for (let h = 0; h < H; h++) {
        for (let w = 0; w < W; w++) {
          const sw = transform === 'hflip' ? W - 1 - w : w;
          for (let c = 0; c < C; c++) out[dst + h * row + w * C + c] = input[src + h * row + sw * C + c];
        }
      }
    }
  }
}

/** 1,024 seeded CRR groups of G = G' = 8 (5 options, 5% invalid answers, 10% bad format). */
export function crrBenchInputs(groups = 1024): ReturnType<typeof packCrrGroups> {
  let s = 12345;
  const rand = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const out: CrrGroup[] = [];
  for (let b = 0; b < groups; b++) {
    const k = 5;
    const roll = () =>
      Array.from({ length: 8 }, () => ({
        answer: rand() < 0.05 ? -1 : Math.floor(rand() * k),
        format: rand() < 0.9 ? 1 : 0,
      }));
    out.push({
      truth: Math.floor(rand() * 4),
      relation: rand() < 0.6 ? 'change' : 'same',
      numOptions: k,
      orig: roll(),
      cf: roll(),
    });
  }
  return packCrrGroups(out);
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export async function benchOps(
  o: OpsBenchOptions = {},
  hooks: { log?(m: string): void } = {},
): Promise<OpsBenchResult> {
  const device = o.device ?? 'cpu';
  const runs = o.runs ?? 9;
  const say = hooks.log ?? (() => undefined);
  if (typeof device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(device))
    throw new CrpoError(
      'ERR_CRPO_INVALID_ARG',
      `Expected 'cpu' or 'cuda[:N]' for --device but received ${String(device)}`,
    );
  if (!Number.isInteger(runs) || runs < 5) throw outOfRange('--runs', 'an integer >= 5', runs, 'bench ops');
  const cuda = device.startsWith('cuda');
  if (cuda) {
    if (!hasAddon('torch'))
      throw new CrpoError('ERR_CRPO_DEVICE', `--device ${device}: the torch addon is not built (npm run build:torch)`);
    const info = torchInfo();
    if (!info.cudaAvailable || !info.cudaKernelsBuilt) {
      throw new CrpoError(
        'ERR_CRPO_DEVICE',
        `--device ${device}: this build has no CUDA (libtorch ${info.torchVersion}, CUDA available: ` +
          `${info.cudaAvailable}, CUDA kernels built: ${info.cudaKernelsBuilt}); use --device cpu`,
      );
    }
  }
  const shape = [...OPS_SHAPE];
  const bytes = shape.reduce((a, b) => a * b, 1);
  const input = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) input[i] = (i * 2654435761) >>> 24;
  const output = new Uint8Array(bytes);
  const gb = (ms: number) => bytes / 1e9 / (ms / 1e3);

  say('[bench] memcpy and the naive TS loops');
  const memcpy = timeSync(() => output.set(input), 2, runs);
  const naive: Record<string, SampleStats> = {};
  for (const t of ['hflip', 'reverse', 'swap'])
    naive[t] = timeSync(() => naiveTransform(input, output, shape, t), 1, 5);

  const addons: AddonName[] = cuda ? ['torch'] : (['core', 'torch'] as AddonName[]).filter(hasAddon);
  const rows: OpRow[] = [];
  for (const addon of addons) {
    say(`[bench] counterfactual ops, ${addon} addon on ${device}`);
    const f = ops(addon);
    for (const transform of VIDEO_TRANSFORMS) {
      const opts = {
        shape,
        layout: 'BTHWC' as const,
        transform,
        swapAt: transform === 'swap' ? shape[1] / 2 : undefined,
        output,
        ...(cuda ? { device } : {}),
      };
      const t = timeSync(() => f.videoTransformSync(input, opts), 2, runs);
      const ref = naive[transform === 'hflip+reverse' ? 'hflip' : transform];
      rows.push({
        ...t,
        op: transform,
        addon,
        device,
        GBs: gb(t.medianMs),
        vsMemcpy: memcpy.medianMs / t.medianMs,
        vsNaive: ref.medianMs / t.medianMs,
      });
    }
  }

  say('[bench] CRR kernel vs the TS reference');
  const crr = crrBenchInputs();
  const want = referenceCrr(crr);
  const ref = timeSync(() => referenceCrr(crr), 2, runs);
  const results: CrrRow[] = [{ ...ref, impl: 'TS reference (lib/reward/reference.ts)', speedup: 1, maxAbsDiff: 0 }];
  // CRR runs on the host in both addons; on a CUDA request the torch addon's kernel is the one shown.
  for (const addon of addons) {
    const got = ops(addon).crrAdvantagesSync(crr);
    const diff = Math.max(maxAbs(got.origAdvantage, want.origAdvantage), maxAbs(got.cfAdvantage, want.cfAdvantage));
    if (!(diff <= 1e-5))
      throw new CrpoError(
        'ERR_CRPO_MISMATCH',
        `CRR kernel (${addon} addon) differs from the TS reference by ${diff} (tolerance 1e-5)`,
        { userError: false },
      );
    const t = timeSync(() => ops(addon).crrAdvantagesSync(crr), 50, Math.max(runs, 15));
    results.push({ ...t, impl: `fused kernel (${addon} addon)`, speedup: ref.medianMs / t.medianMs, maxAbsDiff: diff });
  }
  return {
    machine: machineInfo(),
    device,
    shape,
    bytes,
    memcpy: { ...memcpy, GBs: gb(memcpy.medianMs) },
    naive,
    ops: rows,
    crr: { groups: 1024, perBranch: 8, results },
  };
}

export function formatOpsBench(
  r: OpsBenchResult,
  title = '### Counterfactual ops and the CRR kernel (`crpo bench ops`)',
): string {
  const gb = (ms: number) => r.bytes / 1e9 / (ms / 1e3);
  const rows: (string | number)[][] = [
    ['memcpy (TypedArray.set)', '-', fixed(r.memcpy.medianMs), fixed(r.memcpy.GBs), '1.00', '-'],
  ];
  for (const o of r.ops)
    rows.push([
      `${o.op} (${o.addon})`,
      o.addon,
      fixed(o.medianMs),
      fixed(o.GBs),
      fixed(o.vsMemcpy),
      fixed(o.vsNaive, 1),
    ]);
  for (const [t, s] of Object.entries(r.naive))
    rows.push([
      `naive TS loop: ${t}`,
      '-',
      fixed(s.medianMs),
      fixed(gb(s.medianMs)),
      fixed(r.memcpy.medianMs / s.medianMs),
      '1.0',
    ]);
  const m = r.machine;
  return [
    title,
    '',
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, ${m.platform}; load average ` +
      `${fixed(m.loadAverage1m, 1)}; ${m.date}. Device ${r.device}; single thread; outputs preallocated.`,
    '',
    `Frames [${r.shape.join(',')}] uint8 (${(r.bytes / 2 ** 20).toFixed(1)} MiB). Ratios are against memcpy of the ` +
      `same bytes and the naive TS loop, measured in the same run.`,
    '',
    markdownTable(['op', 'addon', 'median ms', 'GB/s', 'x memcpy', 'x naive TS'], rows),
    '',
    `CRR rewards + advantages for ${r.crr.groups.toLocaleString('en-US')} groups, G = G' = ${r.crr.perBranch} ` +
      `(kernels checked equal to the reference first):`,
    '',
    markdownTable(
      ['implementation', 'median ms', 'speed-up', 'max abs diff'],
      r.crr.results.map((c) => [c.impl, fixed(c.medianMs, 3), fixed(c.speedup, 1), c.maxAbsDiff.toExponential(1)]),
    ),
  ].join('\n');
}
