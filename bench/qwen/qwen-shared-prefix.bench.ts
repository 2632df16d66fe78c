/**
 * Shared-prefix training and scoring of the qwen policy against the per-row path (every row
 * whole, as transformers' modeling code runs a batch), CPU fp32, at G = 8 completions of one
 * prompt whose (vision + prompt) prefix is 4x the completion length. Two random-initialised
 * Qwen2.5-VL sizes written here (config + safetensors, small vocabularies so that the LM body, not
 * the vocabulary projection, is the work): the 25 M shape of issue 18 (LM 4 x 512, vision 4 x 256)
 * and a larger one (LM 8 x 768, vision 4 x 384). Per size: one GRPO train step (LoRA r=16 on
 * q/k/v/o, gradient checkpointing: the policy's defaults; apply = AdamW included) and one scoring
 * call (reference log-probs, no grad), each path timed in alternation (paired runs, median).
 * CRPO_BENCH_SIZES=25m (or 86m) picks one size; CRPO_BENCH_RUNS sets the timed runs (default 3).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QwenVLModel, type QwenInputs } from '../../lib/hf/model';
import { torchInfo } from '../../lib/native';
import { describeMachine, fmt, machine, table, writeResults } from '../harness';
import { G, SIZES, groupRows, writeRandomFolder } from './random-qwen';

interface Paired {
  /** Medians of wall time and of the process's CPU time (user + system, all threads). */
  slowMs: number;
  fastMs: number;
  slowCpuMs: number;
  fastCpuMs: number;
  /** Fastest run of each path (the least disturbed by other jobs on the machine). */
  slowMinMs: number;
  fastMinMs: number;
  /** Per-run wall-time ratios slow / fast. */
  ratios: number[];
}

async function paired(runs: number, slow: () => Promise<void>, fast: () => Promise<void>): Promise<Paired> {
  await slow(); // warm-up of both paths
  await fast();
  const wall: number[][] = [[], []],
    cpu: number[][] = [[], []];
  const once = async (fn: () => Promise<void>, k: number) => {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await fn();
    wall[k].push(Number(process.hrtime.bigint() - t0) / 1e6);
    const c = process.cpuUsage(c0);
    cpu[k].push((c.user + c.system) / 1000);
  };
  for (let i = 0; i < runs; i++) {
    await once(slow, 0);
    await once(fast, 1);
  }
  const med = (x: number[]) => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)];
  return {
    slowMs: med(wall[0]),
    fastMs: med(wall[1]),
    slowCpuMs: med(cpu[0]),
    fastCpuMs: med(cpu[1]),
    slowMinMs: Math.min(...wall[0]),
    fastMinMs: Math.min(...wall[1]),
    ratios: wall[0].map((x, i) => x / wall[1][i]),
  };
}

async function main(): Promise<void> {
  torchInfo();
  const runs = Number(process.env.CRPO_BENCH_RUNS ?? 5);
  const want = (process.env.CRPO_BENCH_SIZES ?? '25m,86m').split(',');
  const json: Record<string, unknown> = { machine: machine(), G, runs };
  const out: (string | number)[][] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-bench-prefix-'));
  try {
    for (const s of SIZES.filter((x) => want.includes(x.name))) {
      const dir = path.join(tmp, s.name);
      const params = writeRandomFolder(s, dir);
      const m = await QwenVLModel.load(dir);
      m.addLora({ rank: 16, alpha: 32, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] });
      m.setGradientCheckpointing(true);
      const { inputs, prefix, L } = groupRows(s, G, 7);
      const sharedIn: QwenInputs = { ...inputs, prefixGroups: [{ rows: G, prefixLength: prefix }] };
      const completionMask = new Int32Array(G * L);
      for (let b = 0; b < G; b++) for (let j = prefix; j < L; j++) completionMask[b * L + j] = 1;
      const step = {
        completionMask,
        advantages: Float32Array.from({ length: G }, (_, i) => (i % 2 ? 1 : -1)),
        lr: 1e-5,
      };
      const train = await paired(
        runs,
        async () => void (await m.trainStep(inputs, step)),
        async () => void (await m.trainStep(sharedIn, step)),
      );
      const score = await paired(
        runs,
        async () => void (await m.forward(inputs, { lora: false })),
        async () => void (await m.forward(sharedIn, { lora: false })),
      );
      m.dispose();
      const r = {
        parameters: params,
        prefix,
        completion: s.completion,
        trainStep: train,
        scoring: score,
      };
      json[s.name] = r;
      const tokens = G * s.completion;
      for (const [what, t] of [
        ['train step (LoRA, checkpointed)', train],
        ['scoring (reference log-probs)', score],
      ] as const) {
        out.push([
          `${(params / 1e6).toFixed(1)} M (LM ${s.lm.layers} x ${s.lm.hidden}, ` +
            `vision ${s.vision.depth} x ${s.vision.hidden})`,
          `${prefix} + ${s.completion}`,
          fmt((G * (prefix + s.completion)) / (prefix + G * s.completion)),
          what,
          fmt(t.slowMs, 0),
          fmt(t.fastMs, 0),
          fmt((tokens / t.fastMs) * 1000, 0),
          `**${fmt(t.slowMs / t.fastMs)}x**`,
          `${fmt(t.slowCpuMs / t.fastCpuMs)}x`,
          `${fmt(t.slowMinMs / t.fastMinMs)}x`,
          t.ratios.map((x) => fmt(x)).join(', '),
        ]);
      }
      console.error(`${s.name}: done`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const md = [
    '### Qwen-VL shared-prefix training vs per-row (`bench/qwen/qwen-shared-prefix.bench.ts`, CPU, fp32)',
    '',
    'Reproduce: `npm run bench -- qwen` (writes its random folders to a temp dir; CRPO_BENCH_SIZES=25m for one size).',
    '',
    `Machine: ${describeMachine(json.machine as Record<string, unknown>)}. One prompt, G = ${G} completions;`,
    'prefix = prompt text + the merged visual tokens of a 2-frame video (Qwen2.5-VL, random weights,',
    'small vocabulary).',
    'Per-row = every row whole (transformers-style); shared = the prefix once, the completions against its',
    'keys/values (native/torch/qwen/qwen_prefix.cpp). Paired runs in alternation after one warm-up each;',
    `medians of ${runs} of wall time and of the process's CPU time (user + system, both threads).`,
    '',
    table(
      [
        'model',
        'prefix + completion',
        'LM tokens per-row / shared',
        'call',
        'per-row ms',
        'shared ms',
        'completion tok/s (shared)',
        'speed-up (wall)',
        'speed-up (CPU time)',
        'speed-up (fastest runs)',
        'per-run wall ratios',
      ],
      out,
    ),
  ].join('\n');
  writeResults('qwen-shared-prefix', json, md);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
