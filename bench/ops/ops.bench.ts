/**
 * Foundation ops benchmark: flip / reverse / swap throughput on [8,16,224,224,3] uint8 next to a
 * memcpy of the same bytes (TypedArray.set, the physical limit here) and a naive TS loop, all
 * into preallocated outputs; and the fused CRR kernel vs the TS reference at 1,024 groups of
 * G = 8 per branch. Medians of >= 5 runs after warm-up, same process, same run.
 */
import { hasAddon, ops, type AddonName } from '../../lib/native';
import { packCrrGroups, referenceCrr, type CrrGroup } from '../../lib/reward';
import { describeMachine, fmt, machine, table, time, writeResults } from '../harness';

const [B, T, H, W, C] = [8, 16, 224, 224, 3];
const shape = [B, T, H, W, C];
const bytes = B * T * H * W * C;

/** The straightforward JS loop a user would write: per pixel, per channel. */
function naive(input: Uint8Array, out: Uint8Array, transform: string): void {
  const row = W * C, frame = H * row;
  const tail = T - T / 2;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const st = transform === 'reverse' ? T - 1 - t : transform === 'swap' ? (t < tail ? t + T / 2 : t - tail) : t;
      const src = (b * T + st) * frame, dst = (b * T + t) * frame;
      for (let h = 0; h < H; h++) {
        for (let w = 0; w < W; w++) {
          const sw = transform === 'hflip' ? W - 1 - w : w;
          for (let c = 0; c < C; c++) out[dst + h * row + w * C + c] = input[src + h * row + sw * C + c];
        }
      }
    }
  }
}

function crrInputs(): ReturnType<typeof packCrrGroups> {
  let s = 12345;
  const rand = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const groups: CrrGroup[] = [];
  for (let b = 0; b < 1024; b++) {
    const k = 5;
    const roll = () => Array.from({ length: 8 }, () => ({ answer: rand() < 0.05 ? -1 : Math.floor(rand() * k), format: rand() < 0.9 ? 1 : 0 }));
    groups.push({ truth: Math.floor(rand() * 4), relation: rand() < 0.6 ? 'change' : 'same', numOptions: k, orig: roll(), cf: roll() });
  }
  return packCrrGroups(groups);
}

function main(): void {
  const input = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) input[i] = (i * 2654435761) >>> 24;
  const output = new Uint8Array(bytes);
  const gb = (ms: number) => bytes / 1e9 / (ms / 1e3);

  const memcpy = time(() => output.set(input), { runs: 9 });
  const naiveTimes: Record<string, number> = {};
  for (const t of ['hflip', 'reverse', 'swap']) naiveTimes[t] = time(() => naive(input, output, t), { warmup: 1, runs: 5 }).medianMs;

  const addons = (['core', 'torch'] as AddonName[]).filter(hasAddon);
  const rows: (string | number)[][] = [];
  const json: Record<string, unknown> = { machine: machine(), shape, bytes, memcpyMs: memcpy.medianMs, memcpyGBs: gb(memcpy.medianMs), naiveMs: naiveTimes, ops: [] as unknown[] };
  rows.push(['memcpy (TypedArray.set)', '-', fmt(memcpy.medianMs), fmt(gb(memcpy.medianMs)), '1.00', '-']);
  for (const addon of addons) {
    const o = ops(addon);
    for (const transform of ['hflip', 'reverse', 'hflip+reverse', 'swap'] as const) {
      const opts = { shape, layout: 'BTHWC' as const, transform, swapAt: transform === 'swap' ? T / 2 : undefined, output };
      const t = time(() => o.videoTransformSync(input, opts), { runs: 9 });
      const vsMemcpy = memcpy.medianMs / t.medianMs;
      const naiveMs = naiveTimes[transform === 'hflip+reverse' ? 'hflip' : transform];
      const vsNaive = naiveMs / t.medianMs;
      (json.ops as unknown[]).push({ addon, transform, medianMs: t.medianMs, GBs: gb(t.medianMs), vsMemcpy, vsNaive });
      rows.push([`${transform} (${addon})`, addon, fmt(t.medianMs), fmt(gb(t.medianMs)), fmt(vsMemcpy), fmt(vsNaive, 1)]);
    }
  }
  for (const t of ['hflip', 'reverse', 'swap']) rows.push([`naive TS loop: ${t}`, '-', fmt(naiveTimes[t]), fmt(gb(naiveTimes[t])), fmt(memcpy.medianMs / naiveTimes[t]), '1.0']);

  const crr = crrInputs();
  const ref = time(() => referenceCrr(crr), { runs: 9 });
  const crrRows: (string | number)[][] = [['TS reference (lib/reward/reference.ts)', fmt(ref.medianMs, 3), '1.0']];
  const crrJson: unknown[] = [{ impl: 'ts-reference', medianMs: ref.medianMs }];
  for (const addon of addons) {
    const t = time(() => ops(addon).crrAdvantagesSync(crr), { warmup: 50, runs: 15 });
    crrRows.push([`fused kernel (${addon} addon)`, fmt(t.medianMs, 3), fmt(ref.medianMs / t.medianMs, 1)]);
    crrJson.push({ impl: addon, medianMs: t.medianMs, speedup: ref.medianMs / t.medianMs });
  }
  json.crr = { groups: 1024, perBranch: 8, results: crrJson };

  const md = [
    '### Counterfactual ops and the CRR kernel (`bench/ops`)',
    '',
    `Machine: ${describeMachine(json.machine as Record<string, unknown>)}. Single thread; outputs preallocated.`,
    '',
    `Frames [${shape.join(',')}] uint8 (${(bytes / 2 ** 20).toFixed(1)} MiB). Ratios are against memcpy of the same bytes and the naive TS loop, measured in the same run.`,
    '',
    table(['op', 'addon', 'median ms', 'GB/s', 'x memcpy', 'x naive TS'], rows),
    '',
    'CRR rewards + advantages for 1,024 groups, G = G\' = 8 (median of 15 runs):',
    '',
    table(['implementation', 'median ms', 'speed-up'], crrRows),
  ].join('\n');
  writeResults('ops', json, md);
}

main();
