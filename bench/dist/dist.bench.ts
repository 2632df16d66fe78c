/**
 * Data-parallel cost on this machine (c10d Gloo over loopback, PyTorch DDP's recipe): all-reduce
 * time and bus bandwidth for gradient-sized buffers at 2 ranks, and the native policy's train step
 * at 1 rank x 2b prompts vs 2 ranks x b prompts (gradients all-reduced inside the step), with the
 * share of the 2-rank step spent communicating, measured two ways in the same run: against the
 * same step without the all-reduce (a compute-only twin), and as a stand-alone all-reduce of the
 * model's gradient size. Cores are shared fairly: 1 rank uses every core, 2 ranks half each.
 *
 *   node -r ./scripts/ts-register.js bench/dist/dist.bench.ts      (or: npm run bench -- dist)
 */
import { spawn } from 'child_process';
import * as os from 'os';
import * as path from 'path';
import { describeMachine, fmt, machine, table, timeAsync, writeResults } from '../harness';
import { initDistributed, type DistContext } from '../../lib/distributed';
import { freePort } from '../../lib/distributed/launch';
import { torchAddon, torchCall } from '../../lib/native';

interface Batch { frames: Uint8Array; numVideos: number; promptVideo: Int32Array; promptTransform: string[]; promptIds: Int32Array; promptLengths: Int32Array; groupSize: number }
interface Comp { ids: Int32Array; lengths: Int32Array; width: number; advantages: Float32Array }
interface PolicyRaw {
  policyCreate(c: Record<string, number>): Promise<number>;
  policyTrainStep(id: number, b: Batch, c: Comp, o: Record<string, unknown>): Promise<{ skipped: boolean }>;
  policyInfo(id: number): { parameters: number };
  policyDispose(id: number): boolean;
}

/** The policy's tiny preset (native/torch/model/policy_model.h), ~1.5 M parameters. */
const CONFIG = {
  vocabSize: 512, frames: 8, imageSize: 32, channels: 3, patchSize: 8, temporalPatch: 2, mergeSize: 2,
  visionDim: 64, visionLayers: 2, visionHeads: 4, visionMlp: 128, lmDim: 96, lmLayers: 2, lmHeads: 4, lmKvHeads: 2, lmMlp: 256,
  maxSeqLen: 256, ropeTheta: 10000, normEps: 1e-6, initStd: 0.02, padId: 0, seed: 7,
};
const PROMPTS = 8; // global prompts per step (2b)
const GROUP = 4; // completions per prompt
const WIDTH = 32; // completion tokens
const SIZES = [1 << 18, 1 << 20, 1 << 22, 1 << 24]; // floats: 1, 4, 16, 64 MiB
const TRAIN_STEPS = 5; // trainer steps per run (the first is a warm-up)

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
}

function batch(q0: number, q1: number): { b: Batch; c: Comp } {
  const rand = lcg(11);
  const frameBytes = CONFIG.frames * CONFIG.imageSize * CONFIG.imageSize * CONFIG.channels;
  const all = new Uint8Array(PROMPTS * frameBytes).map(() => Math.floor(rand() * 256));
  const ids: number[] = [], lengths: number[] = [];
  const rows = (q1 - q0) * GROUP;
  const c: Comp = { ids: new Int32Array(rows * WIDTH), lengths: new Int32Array(rows), width: WIDTH, advantages: new Float32Array(rows) };
  for (let q = 0; q < PROMPTS; q++) {
    const len = 20 + Math.floor(rand() * 17);
    const toks = Array.from({ length: len }, () => 1 + Math.floor(rand() * (CONFIG.vocabSize - 1)));
    const comp = Array.from({ length: GROUP }, () => ({ len: 8 + Math.floor(rand() * (WIDTH - 8)), toks: Array.from({ length: WIDTH }, () => 1 + Math.floor(rand() * (CONFIG.vocabSize - 1))), adv: rand() * 2 - 1 }));
    if (q < q0 || q >= q1) continue;
    ids.push(...toks);
    lengths.push(len);
    comp.forEach((x, g) => {
      const r = (q - q0) * GROUP + g;
      c.lengths[r] = x.len;
      c.advantages[r] = x.adv;
      for (let t = 0; t < x.len; t++) c.ids[r * WIDTH + t] = x.toks[t];
    });
  }
  const n = q1 - q0;
  return {
    b: { frames: all.slice(q0 * frameBytes, q1 * frameBytes), numVideos: n, promptVideo: Int32Array.from({ length: n }, (_, i) => i), promptTransform: new Array(n).fill('none'), promptIds: Int32Array.from(ids), promptLengths: Int32Array.from(lengths), groupSize: GROUP },
    c,
  };
}

const run = torchCall;

async function worker(): Promise<void> {
  const ctx: DistContext = await initDistributed({ heartbeatTimeoutSeconds: 60 });
  const W = ctx.worldSize;
  const out: Record<string, unknown> = { worldSize: W, threads: Number(process.env.CRPO_NUM_THREADS) };
  const raw = torchAddon() as unknown as Partial<PolicyRaw>;
  const hasPolicy = typeof raw.policyCreate === 'function';
  let params = 0;
  if (hasPolicy) {
    const p = raw as PolicyRaw;
    const id = await run(() => p.policyCreate(CONFIG));
    params = p.policyInfo(id).parameters;
    const per = PROMPTS / W;
    const mine = batch(ctx.rank * per, (ctx.rank + 1) * per);
    const opts = { lr: 1e-4, maxGradNorm: 1, beta: 0 };
    const step = (pg?: number) => async () => {
      await run(() => p.policyTrainStep(id, mine.b, mine.c, pg === undefined ? opts : { ...opts, processGroup: pg }));
    };
    // Interleaved: the step with the all-reduce, then (2 ranks) the same step without it, so that
    // drift in machine load hits both alike. Inside the step, time in collectives is counted natively.
    const dp: number[] = [], local: number[] = [], comm: number[] = [], commMin: number[] = [];
    const now = () => Number(process.hrtime.bigint()) / 1e6;
    for (let i = 0; i < 9; i++) {
      if (W > 1) await ctx.barrier();
      const c0 = ctx.group ? ctx.group.commStats().seconds : 0;
      let t = now();
      await step(ctx.nativeGroupId)();
      const ms = now() - t;
      const commMs = ctx.group ? (ctx.group.commStats().seconds - c0) * 1e3 : 0;
      if (W > 1) {
        await ctx.barrier();
        t = now();
        await step(undefined)();
        if (i >= 2) local.push(now() - t);
      }
      // The slowest rank's time in the all-reduce is the transfer itself; the others also wait for it.
      const cmin = new Float64Array([commMs]);
      if (W > 1) await ctx.allReduce(cmin, 'min');
      if (i >= 2) {
        dp.push(ms);
        comm.push(commMs);
        commMin.push(cmin[0]);
      }
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    out.stepMs = med(dp);
    out.debug = { dp: dp.map(Math.round), local: local.map(Math.round), comm: comm.map(Math.round) };
    if (W > 1) {
      out.localStepMs = med(local);
      out.commInStepMs = med(comm);
      out.commSlowestRankMs = med(commMin);
    }
    p.policyDispose(id);
  }
  out.params = params;
  if (W > 1) {
    const ar: Record<string, number> = {};
    for (const n of [...(params ? [params] : []), ...SIZES]) {
      const buf = new Float32Array(n).fill(1);
      await ctx.barrier();
      ar[n] = (await timeAsync(() => ctx.allReduce(buf, 'mean'), { warmup: 2, runs: n >= 1 << 24 ? 5 : 9 })).medianMs;
    }
    out.allReduceMs = ar;
  }
  if (process.env.CRPO_BENCH_DEBUG) process.stderr.write(`rank ${ctx.rank}: ${JSON.stringify(out.debug)}\n`);
  if (ctx.isMain) process.stdout.write(JSON.stringify(out) + "\n");
  await ctx.close();
}

/** A few steps of lib/train's train() with the native policy; rank 0 reports step seconds and time in collectives. */
async function trainerWorker(): Promise<void> {
  const { resolveConfig } = await import('../../lib/train/config');
  const { train } = await import('../../lib/train/trainer');
  await import('../../lib/policy/native');
  const fs = await import('fs');
  const ctx: DistContext = await initDistributed({ heartbeatTimeoutSeconds: 60 });
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-bench-dist-'));
  const c = resolveConfig({ overrides: { policy: { kind: 'native', init: '', preset: 'tiny' }, data: { train: 'synthetic', val: '', pairs: 16, valPairs: 4 }, steps: TRAIN_STEPS, batchSize: 8, groupSize: 4, valEvery: 0, saveEvery: 1000, out, progress: false, plots: false } as never });
  const steps: { seconds: number; comm: number; update: number; rollout: number }[] = [];
  let comm0 = ctx.group ? ctx.group.commStats().seconds : 0;
  await train(c, {
    dist: ctx,
    log: () => undefined,
    onStep: (line) => {
      const comm = ctx.group ? ctx.group.commStats().seconds : 0;
      steps.push({ seconds: Number(line.step_seconds), comm: comm - comm0, update: Number(line.update_seconds), rollout: Number(line.rollout_seconds) });
      comm0 = comm;
    },
  });
  const kept = steps.slice(1); // the first step warms up
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  // Per step, the least time any rank spent in collectives: the transfer without waiting for others.
  const commMin = Float64Array.from(kept.map((x) => x.comm));
  await ctx.allReduce(commMin, 'min');
  if (ctx.isMain) {
    process.stdout.write(JSON.stringify({ worldSize: ctx.worldSize, threads: Number(process.env.CRPO_NUM_THREADS), stepMs: 1e3 * med(kept.map((x) => x.seconds)), commMs: 1e3 * med(kept.map((x) => x.comm)), transferMs: 1e3 * med(Array.from(commMin)), updateMs: 1e3 * med(kept.map((x) => x.update)), rolloutMs: 1e3 * med(kept.map((x) => x.rollout)) }) + '\n');
  }
  fs.rmSync(out, { recursive: true, force: true });
  await ctx.close();
}

async function launch(world: number, threadsPerRank?: number, mode = '--worker'): Promise<Record<string, any>> {
  const port = await freePort();
  const cores = os.cpus().length;
  const threads = String(threadsPerRank ?? Math.max(1, Math.floor(cores / world)));
  const outs = await Promise.all(
    Array.from({ length: world }, (_, rank) => {
      const env: Record<string, string | undefined> = { ...process.env, CRPO_NUM_THREADS: threads, OMP_NUM_THREADS: threads, OPENBLAS_NUM_THREADS: threads };
      if (world > 1) Object.assign(env, { MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RANK: String(rank), WORLD_SIZE: String(world), LOCAL_RANK: String(rank) });
      else for (const k of ['RANK', 'WORLD_SIZE', 'SLURM_PROCID', 'SLURM_NTASKS']) delete env[k];
      return new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ['-r', path.resolve(__dirname, '../../scripts/ts-register.js'), __filename, mode], { env, stdio: ['ignore', 'pipe', 'inherit'] });
        let text = '';
        child.stdout.on('data', (b) => (text += b));
        child.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`rank ${rank} of ${world} exited ${code}`))));
      });
    }),
  );
  return JSON.parse(outs[0].trim().split('\n').pop()!);
}

async function main(): Promise<void> {
  const m = machine();
  // Alternate 1-rank and 2-rank runs and keep each one's fastest: the machine may be shared, and
  // load that comes and goes should not decide the comparison.
  const ROUNDS = Number(process.env.CRPO_BENCH_ROUNDS) || 2;
  let one: Record<string, any> | undefined, oneT1: Record<string, any> | undefined, two: Record<string, any> | undefined;
  const faster = (x: Record<string, any> | undefined, y: Record<string, any>) => (!x || (y.stepMs ?? 0) < (x.stepMs ?? 0) ? y : x);
  for (let r = 0; r < ROUNDS; r++) {
    one = faster(one, await launch(1));
    two = faster(two, await launch(2));
    oneT1 = faster(oneT1, await launch(1, 1));
  }
  if (!one || !two || !oneT1) throw new Error('no runs');
  let tr1: Record<string, any> | undefined, tr2: Record<string, any> | undefined;
  if (one.stepMs !== undefined) {
    for (let r = 0; r < ROUNDS; r++) {
      tr1 = faster(tr1, await launch(1, undefined, '--trainer'));
      tr2 = faster(tr2, await launch(2, undefined, '--trainer'));
    }
  }
  const mib = (n: number) => (n * 4) / 2 ** 20;
  const bus = (n: number, ms: number) => (n * 4 * 2 * (2 - 1)) / 2 / (ms / 1e3) / 1e9;
  const arRows = Object.entries(two.allReduceMs as Record<string, number>).map(([n, ms]) => [
    Number(n) === one.params ? `${fmt(mib(Number(n)), 1)} (policy gradient, ${Number(n).toLocaleString('en-US')} floats)` : fmt(mib(Number(n)), 1),
    fmt(ms),
    fmt(bus(Number(n), ms)),
  ]);
  const load = os.loadavg().map((x) => x.toFixed(1)).join(' / ');
  let md = `### Data-parallel training: c10d Gloo on loopback (\`bench/dist\`)\n\nMachine: ${describeMachine(m)}. Load average at the end of the run (1 / 5 / 15 min): ${load} on ${os.cpus().length} cores${os.loadavg()[0] > os.cpus().length ? ' - the machine was busy with other work, so absolute times are inflated and noisy' : ''}.\n\n`;
  md += `All-reduce (mean, 25 MiB buckets) of one fp32 buffer, 2 ranks on 127.0.0.1; bus bandwidth as nccl-tests define it (bytes x 2(W-1)/W / time):\n\n`;
  md += table(['MiB', 'median ms', 'bus GB/s'], arRows) + '\n\n';
  const json: Record<string, unknown> = { machine: m, loadavg: os.loadavg(), one, oneThread: oneT1, two };
  if (one.stepMs !== undefined) {
    const commShare = two.commInStepMs / two.stepMs;
    const twinShare = (two.stepMs - two.localStepMs) / two.stepMs;
    const arShare = (two.allReduceMs[one.params] as number) / two.stepMs;
    const samples = PROMPTS * GROUP;
    md += `Native policy train step (tiny preset, ${one.params.toLocaleString('en-US')} parameters; ${PROMPTS} prompts x ${GROUP} completions x ${WIDTH} tokens per global step; AdamW; median of 7 after 2 warm-up steps):\n\n`;
    md += table(
      ['ranks x prompts', 'threads per rank', 'ms per global step', 'samples/s', 'speed-up', 'time in all-reduce (share of step)'],
      [
        [`1 x ${PROMPTS}`, one.threads, fmt(one.stepMs, 1), fmt((samples / one.stepMs) * 1e3, 1), '1.00', '-'],
        [`1 x ${PROMPTS}`, oneT1.threads, fmt(oneT1.stepMs, 1), fmt((samples / oneT1.stepMs) * 1e3, 1), fmt(one.stepMs / oneT1.stepMs), '-'],
        [`2 x ${PROMPTS / 2}`, two.threads, fmt(two.stepMs, 1), fmt((samples / two.stepMs) * 1e3, 1), fmt(one.stepMs / two.stepMs), `${fmt(two.commInStepMs, 1)} ms (${fmt(100 * commShare, 1)}%), of which transfer ${fmt(two.commSlowestRankMs, 1)} ms (${fmt((100 * two.commSlowestRankMs) / two.stepMs, 1)}%)`],
      ],
    );
    md += `\n\nTime in all-reduce is measured inside the step on rank 0 (copies into buckets, transfer, and waiting for the slower rank); "transfer" is the same time on whichever rank arrived last (min over ranks), i.e. without the wait. Cross-checks from the same run: the same 2-rank step without the all-reduce takes ${fmt(two.localStepMs, 1)} ms (difference ${fmt(100 * twinShare, 1)}% of the step); a stand-alone all-reduce of the gradient's size takes ${fmt(two.allReduceMs[one.params], 2)} ms (${fmt(100 * arShare, 1)}%). All rows share the same ${os.cpus().length} cores (1 rank x ${one.threads} threads, 1 rank x 1 thread, 2 ranks x ${two.threads} thread${two.threads > 1 ? 's' : ''}); each row is the fastest of ${ROUNDS} alternating runs. When the load average above exceeds the core count, ratios between rows are dominated by other work on the machine; the share of a 2-rank step spent in the all-reduce is measured inside one run and is the robust number.`;
    if (tr1 && tr2) {
      md += `\n\nFull trainer steps (lib/train \`train()\`, native policy, tiny preset, CRPO: 8 prompts x (4 original + 4 counterfactual) rollouts per global step, synthetic DyBench; median of ${TRAIN_STEPS - 1} steps after a warm-up step, fastest of ${ROUNDS} runs):\n\n`;
      md += table(
        ['ranks x prompts', 'threads per rank', 's per step', 'rollout s', 'update s', 'time in all-reduce (share of step)'],
        [
          [`1 x 8`, tr1.threads, fmt(tr1.stepMs / 1e3, 3), fmt(tr1.rolloutMs / 1e3, 3), fmt(tr1.updateMs / 1e3, 3), '-'],
          [`2 x 4`, tr2.threads, fmt(tr2.stepMs / 1e3, 3), fmt(tr2.rolloutMs / 1e3, 3), fmt(tr2.updateMs / 1e3, 3), `${fmt(tr2.commMs, 1)} ms (${fmt((100 * tr2.commMs) / tr2.stepMs, 1)}%), of which transfer ${fmt(tr2.transferMs, 1)} ms (${fmt((100 * tr2.transferMs) / tr2.stepMs, 1)}%)`],
        ],
      );
      md += '\n\nStep, rollout and update seconds of the 2-rank row are means over the ranks (the trainer reduces its metrics); time in all-reduce is rank 0\'s, inside the gradient all-reduce of the update and the metric reductions, including waits for the slower rank; "transfer" is the least such time over the ranks, per step.\n';
      Object.assign(json, { trainer: { one: tr1, two: tr2 } });
    }
    Object.assign(json, { commShare, twinShare, arShare });
  } else {
    md += 'The native policy is not built into this addon: no train-step rows.\n';
  }
  writeResults('dist', json, md);
}

if (process.argv.includes('--trainer')) {
  trainerWorker().catch((e) => {
    process.stderr.write(`bench trainer worker: ${(e as Error).stack}\n`);
    process.exit(1);
  });
} else if (process.argv.includes('--worker')) {
  worker().catch((e) => {
    process.stderr.write(`bench worker: ${(e as Error).message}\n`);
    process.exit(1);
  });
} else {
  main().catch((e) => {
    process.stderr.write(`bench/dist: ${(e as Error).stack}\n`);
    process.exit(1);
  });
}
