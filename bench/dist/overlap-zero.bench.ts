/**
 * Two data-parallel measurements on this machine (c10d Gloo over loopback):
 *  1. How much of the gradient all-reduce hides behind backward (crpo::dist::GradReducer in the
 *     native policy's train step, tiny preset) at 2 and 4 ranks. Per step, interleaved: the
 *     overlapped step (buckets start during backward) and its after-backward twin. Exposed = the time
 *     the overlapped step still waits for its buckets after backward (commStats().overlapWaitSeconds);
 *     total = the twin's time in the gradient all-reduce (its time in collectives minus the
 *     overlapped step's weights all-reduce, the one collective both steps share). Hidden share =
 *     1 - exposed / total.
 *  2. Per-rank AdamW state of full fine-tuning of the golden Qwen3-VL (every LM weight, fp32) at 1,
 *     2 and 4 ranks, plain (zero 0) and sharded (zero 1): the model's own count of its moments and
 *     the tensor byte counter (native/torch/tensor_bytes.cpp): live CPU tensor bytes after 2 steps
 *     minus before the first one (moments + the gradients, which stay allocated between steps).
 *
 *   node -r ./scripts/ts-register.js bench/dist/overlap-zero.bench.ts      (or: npm run bench -- dist)
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describeMachine, fmt, machine, table, writeResults } from '../harness';
import { initDistributed, type DistContext } from '../../lib/distributed';
import { freePort } from '../../lib/distributed/launch';
import { torchAddon, torchCall } from '../../lib/native';

/** The native policy's tiny preset (native/torch/model/policy_model.h), ~1.5 M parameters. */
const TINY = {
  vocabSize: 512,
  frames: 8,
  imageSize: 32,
  channels: 3,
  patchSize: 8,
  temporalPatch: 2,
  mergeSize: 2,
  visionDim: 64,
  visionLayers: 2,
  visionHeads: 4,
  visionMlp: 128,
  lmDim: 96,
  lmLayers: 2,
  lmHeads: 4,
  lmKvHeads: 2,
  lmMlp: 256,
  maxSeqLen: 256,
  ropeTheta: 10000,
  normEps: 1e-6,
  initStd: 0.02,
  padId: 0,
  seed: 7,
};
const PROMPTS = 8; // global prompts per step
const GROUP = 4; // completions per prompt
const WIDTH = 32; // completion tokens
const STEPS = 12; // per mode, after 2 warm-up steps
const BUCKETS_MB = [1, 25]; // DDP's default is 25 MiB
const GOLDEN = path.resolve(__dirname, '..', '..', '..', 'shared', 'golden', 'qwen3_vl');

interface PolicyRaw {
  policyCreate(c: Record<string, number>): Promise<number>;
  policyTrainStep(id: number, b: unknown, c: unknown, o: Record<string, unknown>): Promise<{ skipped: boolean }>;
  policyInfo(id: number): { parameters: number };
  policyDispose(id: number): boolean;
}

/** This rank's prompts [q0, q1) of a fixed pseudo-random global batch. */
function shard(q0: number, q1: number) {
  let s = 11;
  const rand = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const frameBytes = TINY.frames * TINY.imageSize * TINY.imageSize * TINY.channels;
  const n = q1 - q0;
  const frames = new Uint8Array(n * frameBytes).map(() => Math.floor(rand() * 256));
  const ids: number[] = [],
    lengths: number[] = [];
  const rows = n * GROUP;
  const c = {
    ids: new Int32Array(rows * WIDTH),
    lengths: new Int32Array(rows),
    width: WIDTH,
    advantages: new Float32Array(rows),
  };
  for (let q = 0; q < n; q++) {
    const len = 20 + ((q0 + q) % 17);
    for (let t = 0; t < len; t++) ids.push(1 + Math.floor(rand() * (TINY.vocabSize - 1)));
    lengths.push(len);
    for (let g = 0; g < GROUP; g++) {
      const r = q * GROUP + g;
      c.lengths[r] = 8 + ((q0 + q + g) % (WIDTH - 8));
      c.advantages[r] = rand() * 2 - 1;
      for (let t = 0; t < c.lengths[r]; t++) c.ids[r * WIDTH + t] = 1 + Math.floor(rand() * (TINY.vocabSize - 1));
    }
  }
  const b = {
    frames,
    numVideos: n,
    promptVideo: Int32Array.from({ length: n }, (_, i) => i),
    promptTransform: new Array(n).fill('none'),
    promptIds: Int32Array.from(ids),
    promptLengths: Int32Array.from(lengths),
    groupSize: GROUP,
  };
  return { b, c };
}

const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function overlapWorker(): Promise<void> {
  const ctx: DistContext = await initDistributed({ heartbeatTimeoutSeconds: 120 });
  const raw = torchAddon() as unknown as PolicyRaw;
  const id = await torchCall(() => raw.policyCreate(TINY));
  const per = PROMPTS / ctx.worldSize;
  const mine = shard(ctx.rank * per, (ctx.rank + 1) * per);
  const out: Record<string, unknown> = { worldSize: ctx.worldSize, params: raw.policyInfo(id).parameters };
  for (const mb of BUCKETS_MB) {
    const exposed: number[] = [],
      overlapComm: number[] = [],
      twinComm: number[] = [],
      stepMs: number[] = [],
      twinMs: number[] = [];
    let buckets = 0,
      early = 0;
    for (let i = 0; i < STEPS + 2; i++) {
      for (const overlap of [true, false]) {
        await ctx.barrier();
        const s0 = ctx.group!.commStats();
        const t0 = performance.now();
        await torchCall(() =>
          raw.policyTrainStep(id, mine.b, mine.c, {
            lr: 1e-5,
            maxGradNorm: 1,
            beta: 0,
            processGroup: ctx.nativeGroupId,
            overlapGrads: overlap,
            gradBucketMb: mb,
          }),
        );
        const ms = performance.now() - t0;
        const s1 = ctx.group!.commStats();
        if (i < 2) continue;
        if (overlap) {
          exposed.push((s1.overlapWaitSeconds - s0.overlapWaitSeconds) * 1e3);
          overlapComm.push((s1.seconds - s0.seconds) * 1e3);
          stepMs.push(ms);
          buckets = s1.overlapBuckets - s0.overlapBuckets;
          early = s1.overlapEarlyBuckets - s0.overlapEarlyBuckets;
        } else {
          twinComm.push((s1.seconds - s0.seconds) * 1e3);
          twinMs.push(ms);
        }
      }
    }
    // Per step, the least time over the ranks: the rank that reached the collective last waits for
    // the transfer only, not for slower ranks (the others' waits include the skew of their compute).
    const least = async (xs: number[]) => {
      const a = Float64Array.from(xs);
      await ctx.allReduce(a, 'min');
      return Array.from(a);
    };
    const exposedMin = await least(exposed);
    // The weights all-reduce (shared by both modes): the overlapped step's time in collectives
    // that is not its post-backward wait.
    const weightsMin = await least(overlapComm.map((c, k) => c - exposed[k]));
    const twinMin = await least(twinComm);
    const weightsMs = med(weightsMin);
    const totalMs = med(twinMin) - weightsMs;
    out[`mb${mb}`] = {
      exposedMs: med(exposedMin),
      totalMs,
      weightsMs,
      stepMs: med(stepMs),
      twinStepMs: med(twinMs),
      hidden: 1 - med(exposedMin) / totalMs,
      buckets,
      early,
    };
  }
  raw.policyDispose(id);
  if (ctx.isMain) process.stdout.write(JSON.stringify(out) + '\n');
  await ctx.close();
}

async function zeroWorker(): Promise<void> {
  const tb = torchAddon().tensorBytes({ install: true });
  if (!tb.installed) throw new Error('the tensor byte counter could not be installed');
  const ctx: DistContext = await initDistributed({ heartbeatTimeoutSeconds: 120 });
  const { QwenPolicy } = await import('../../lib/policy/qwen');
  const { hash32 } = await import('../../lib/random');
  const zero = Number(process.env.BENCH_ZERO || 0) as 0 | 1;
  const p = await QwenPolicy.create({
    model: GOLDEN,
    dtype: 'float32',
    gradientCheckpointing: false,
    lora: { rank: 4, alpha: 8, dropout: 0, targetModules: ['q_proj'] },
  });
  const names = p.model.setTrainable('lm');
  const Q = 4,
    G = 2,
    W = ctx.worldSize;
  const prompts = Array.from({ length: Q }, (_, q) => ({
    frames: Uint8Array.from({ length: 4 * 64 * 64 * 3 }, (_, i) => (i * (q + 3) + q * 17) % 251),
    frameShape: [4, 64, 64, 3] as [number, number, number, 3],
    question: `Is object ${q} moving?`,
    options: ['yes', 'no'],
    prompt: `Is object ${q} moving?\nA. yes\nB. no\nAnswer with the option letter inside <answer></answer>.`,
  }));
  const q0 = (ctx.rank * Q) / W,
    q1 = ((ctx.rank + 1) * Q) / W;
  let trainable = 0;
  for (const n of names) trainable += p.model.getParam(n).data.length;
  const id = (p.model as unknown as { id: number }).id;
  const stateBytes = () =>
    (torchAddon() as unknown as { qwenOptimizerStateBytes(m: number): number }).qwenOptimizerStateBytes(id);
  let before = 0;
  for (let step = 0; step < 2; step++) {
    const out = await p.generate(prompts.slice(q0, q1), {
      samples: G,
      temperature: 1,
      maxNewTokens: 4,
      seed: 0,
      promptSeeds: Array.from({ length: q1 - q0 }, (_, i) => hash32(`7|${step}|orig|${q0 + i}`)),
    });
    const seqs = out.flatMap((cs, i) =>
      cs.map((x, g) => ({ prompt: i, tokens: x.tokens, advantage: ((i + g + step) % 3) - 1, oldLogprobs: x.logprobs })),
    );
    if (step === 0) before = torchAddon().tensorBytes().liveBytes;
    const st = await p.trainStep(prompts.slice(q0, q1), seqs, {
      lr: 1e-4,
      maxGradNorm: 1,
      weightDecay: 0,
      temperature: 1,
      clipLow: 0.2,
      clipHigh: 0.2,
      beta: 0,
      aggregation: 'seq-mean-token-mean',
      maxNewTokens: 4,
      ...(W > 1 ? { processGroup: ctx.nativeGroupId, zero } : {}),
    });
    if (st.skipped) throw new Error(`step ${step} skipped`);
  }
  const after = torchAddon().tensorBytes().liveBytes;
  const mine = new Float64Array([stateBytes(), after - before]);
  const most = Float64Array.from(mine);
  if (W > 1) await ctx.allReduce(most, 'max');
  p.dispose();
  if (ctx.isMain)
    process.stdout.write(
      JSON.stringify({ worldSize: W, zero, trainable, stateBytes: most[0], counterDelta: most[1] }) + '\n',
    );
  await ctx.close();
}

async function launch(world: number, mode: string, env: Record<string, string> = {}): Promise<Record<string, any>> {
  const port = await freePort();
  const threads = String(Math.max(1, Math.floor(os.cpus().length / world)));
  const outs = await Promise.all(
    Array.from({ length: world }, (_, rank) => {
      const e: Record<string, string | undefined> = {
        ...process.env,
        ...env,
        CRPO_NUM_THREADS: threads,
        OMP_NUM_THREADS: threads,
        OPENBLAS_NUM_THREADS: threads,
      };
      if (world > 1)
        Object.assign(e, {
          MASTER_ADDR: '127.0.0.1',
          MASTER_PORT: String(port),
          RANK: String(rank),
          WORLD_SIZE: String(world),
          LOCAL_RANK: String(rank),
        });
      else for (const k of ['RANK', 'WORLD_SIZE', 'SLURM_PROCID', 'SLURM_NTASKS']) delete e[k];
      return new Promise<string>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          ['-r', path.resolve(__dirname, '../../scripts/ts-register.js'), __filename, mode],
          { env: e, stdio: ['ignore', 'pipe', 'inherit'] },
        );
        let text = '';
        child.stdout.on('data', (b) => (text += b));
        child.on('close', (code) =>
          code === 0 ? resolve(text) : reject(new Error(`rank ${rank} of ${world} (${mode}) exited ${code}`)),
        );
      });
    }),
  );
  return JSON.parse(outs[0].trim().split('\n').pop()!);
}

async function main(): Promise<void> {
  const m = machine();
  const json: Record<string, unknown> = { machine: m };
  const load = () =>
    os
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(' / ');
  let md =
    '### Gradient all-reduce overlapped with backward, and sharded optimizer state (`bench/dist/overlap-zero`)\n\n' +
    `Machine: ${describeMachine(m)}.\n\n`;
  const overlap: Record<string, any>[] = [];
  for (const w of [2, 4]) overlap.push(await launch(w, '--overlap'));
  json.overlap = overlap;
  md +=
    `Native policy train step (tiny preset, ${overlap[0].params.toLocaleString('en-US')} parameters, ` +
    `${PROMPTS} prompts x ${GROUP} completions x ${WIDTH} tokens per global step), Gloo on 127.0.0.1, ` +
    `cores split between the ranks; median of ${STEPS} steps per mode after 2 warm-up steps, the two modes ` +
    `interleaved. Load average after the runs (1 / 5 / 15 min): ${load()} on ${os.cpus().length} cores.\n\n`;
  const rows: string[][] = [];
  for (const o of overlap) {
    for (const mb of BUCKETS_MB) {
      const r = o[`mb${mb}`];
      rows.push([
        String(o.worldSize),
        String(mb),
        `${r.early} of ${r.buckets}`,
        fmt(r.totalMs, 1),
        fmt(r.exposedMs, 1),
        `${fmt(100 * r.hidden, 0)}%`,
        fmt(r.stepMs, 1),
        fmt(r.twinStepMs, 1),
      ]);
    }
  }
  md += table(
    [
      'ranks',
      'bucket MiB',
      'buckets early',
      'gradient all-reduce after backward, ms',
      'still waited after backward (overlapped), ms',
      'hidden behind backward',
      'step ms (overlapped)',
      'step ms (after backward)',
    ],
    rows,
  );
  md +=
    '\n\nPer step the least time over the ranks (the rank that arrives last at a collective waits for the ' +
    'transfer only, not for slower ranks), then the median over the steps. ' +
    '"Gradient all-reduce after backward" is the twin\'s time in collectives minus the ' +
    'weights all-reduce both modes share; "still waited" is the overlapped step\'s time in GradReducer::finish ' +
    'waiting for buckets; "buckets early" counts the buckets whose all-reduce started before backward ' +
    'returned (the last one starts with the last gradient). ' +
    `With 25 MiB buckets the tiny policy's ${fmt((overlap[0].params * 4) / 2 ** 20, 1)} MiB of gradients make ` +
    'one bucket, which cannot start before backward ends.\n\n';

  const zero: Record<string, any>[] = [];
  if (fs.existsSync(path.join(GOLDEN, 'config.json'))) {
    for (const w of [1, 2, 4])
      for (const z of w === 1 ? [0] : [0, 1]) zero.push(await launch(w, '--zero', { BENCH_ZERO: String(z) }));
    json.zero = zero;
    const n = zero[0].trainable;
    md +=
      `Full fine-tuning of the golden Qwen3-VL (every LM weight: ${n.toLocaleString('en-US')} fp32 values), ` +
      'AdamW, 2 steps; per rank (the largest over the ranks):\n\n';
    md += table(
      [
        'ranks',
        'optimizer state',
        'AdamW moments held (model count)',
        'formula: 2 x 4 B x (N, or ceil(N / W) with zero 1)',
        'tensor bytes counter: live after 2 steps - before',
        'minus gradients and reducer buckets',
      ],
      zero.map((z) => [
        String(z.worldSize),
        z.worldSize === 1 ? 'plain' : z.zero ? 'zero 1' : 'plain DDP',
        z.stateBytes.toLocaleString('en-US'),
        (8 * (z.zero ? Math.ceil(n / z.worldSize) : n)).toLocaleString('en-US'),
        z.counterDelta.toLocaleString('en-US'),
        (z.counterDelta - 4 * n * (z.worldSize > 1 ? 2 : 1)).toLocaleString('en-US'),
      ]),
    );
    md +=
      '\n\nThe gradients (4N bytes) stay allocated between steps, and with more than one rank so do the ' +
      "overlapped all-reduce's buckets (another 4N: GradReducer keeps a gradient-sized buffer). The " +
      "counter's remainder is the AdamW state plus whatever else a step leaves allocated.\n";
  } else {
    md += `The golden Qwen3-VL folder (${GOLDEN}) is not here: no optimizer-state rows.\n`;
  }
  writeResults('dist-overlap-zero', json, md);
}

const mode = process.argv[2];
const fail = (e: unknown) => {
  process.stderr.write(`bench/dist/overlap-zero ${mode ?? ''}: ${(e as Error).stack}\n`);
  process.exit(1);
};
if (mode === '--overlap') overlapWorker().catch(fail);
else if (mode === '--zero') zeroWorker().catch(fail);
else main().catch(fail);
