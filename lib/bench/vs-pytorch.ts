/**
 * `crpo bench rollout --vs-pytorch`: the two phases that dominate a step of the native tiny policy
 * (rollout generation and the train step) next to the project's PyTorch-Python twin of the same
 * model (bench/pytorch/policy_twin.py), at the bench's B, G, frames and completion length. Equality
 * first (greedy tokens and their log-probs; the train step's loss and gradient norm on the same
 * weights and batch), then back-to-back pairs (one PyTorch call, one native call) after warm-up, so
 * load drift hits both sides alike. Where `python3 -c "import torch, numpy"` fails, the result says
 * so and nothing runs.
 */
import * as fs from 'fs';
import * as path from 'path';
import { PolicyModel, type PolicyInputs, type RlCompletions } from '../model/policy';
import { Tokenizer } from '../model/tokenizer';
import { torchInfo } from '../native';
import {
  PYTHON,
  THREAD_ENV,
  TWIN_SCRIPT,
  TwinServer,
  handOver,
  lcg,
  pairedTiming,
  pythonTorch,
  readF32,
  readI32,
  type PairedTiming,
} from './pytorch-twin';
import type { RolloutBenchConfig } from './rollout';
import { fixed, markdownTable } from './stats';

export interface VsPytorchResult {
  available: boolean;
  /** Why the comparison did not run (absent Python torch, another policy). */
  reason?: string;
  pytorch?: string;
  threads?: number;
  check?: {
    greedyTokensEqual: number;
    greedyTokens: number;
    maxLogprobDiff: number;
    lossNative: number;
    lossPyTorch: number;
    lossRel: number;
    gradNormNative: number;
    gradNormPyTorch: number;
  };
  generate?: PairedTiming & { tokens: number };
  trainStep?: PairedTiming;
}

const LOGP_ATOL = 1e-4,
  LOSS_RTOL = 1e-4,
  NORM_RTOL = 2e-3;
/** The train-step settings of every comparison with the PyTorch twin (also bench/pytorch/train-step). */
export const TWIN_TRAIN_STEP = {
  temperature: 1,
  clipLow: 0.2,
  clipHigh: 0.2,
  beta: 0.04,
  lr: 1e-4,
  beta1: 0.9,
  beta2: 0.999,
  adamEps: 1e-8,
  weightDecay: 0.01,
  maxGradNorm: 1.0,
};

/** Why the twin cannot run here, or undefined. */
export function twinUnavailable(c: Pick<RolloutBenchConfig, 'policy' | 'device'>): string | undefined {
  if (c.policy !== 'native')
    return 'the PyTorch twin is of the native tiny policy; --vs-pytorch compares only with --policy native';
  if (c.device !== 'cpu')
    return `the PyTorch twin runs on the CPU; --vs-pytorch compares only with --device cpu (got ${c.device})`;
  if (!fs.existsSync(TWIN_SCRIPT))
    return `${TWIN_SCRIPT} is absent (it ships in a clone of the repository, not in the npm package)`;
  const why = pythonTorch();
  return why ? `${why}; \`${PYTHON} -c "import torch"\` must work` : undefined;
}

/** B questions x 2 branches (original, hflip) x G rollouts of `width` tokens, as the bench's step has them. */
function batchFor(p: PolicyModel, c: RolloutBenchConfig): PolicyInputs {
  const rand = lcg(11);
  const frames = new Uint8Array(c.batch * p.clipBytes);
  for (let i = 0; i < frames.length; i++) frames[i] = Math.floor(rand() * 256);
  const V = p.tokenizer.size;
  const prompts = [];
  for (let q = 0; q < c.batch; q++) {
    const ids = Array.from({ length: 24 + Math.floor(rand() * 12) }, () => 6 + Math.floor(rand() * (V - 6)));
    prompts.push({ video: q, ids, transform: 'none' as const }, { video: q, ids, transform: 'hflip' as const });
  }
  return { frames, numVideos: c.batch, prompts, groupSize: c.groupSize };
}

export async function benchVsPytorch(
  c: RolloutBenchConfig,
  hooks: { log?(m: string): void } = {},
): Promise<VsPytorchResult> {
  const reason = twinUnavailable(c);
  if (reason) return { available: false, reason };
  const say = hooks.log ?? (() => undefined);
  // Both processes: torch's intra-op threads only, passive OpenMP waiting (lib/bench/pytorch-twin.ts THREAD_ENV).
  Object.assign(process.env, THREAD_ENV);
  const threads = torchInfo().intraOpThreads;
  const tok = Tokenizer.build([Array.from({ length: 440 }, (_, i) => `w${i}`).join(' ')]);
  const policy = await PolicyModel.create(tok, {
    preset: 'tiny',
    seed: 7,
    frames: c.frames,
    imageSize: c.height,
    maxSeqLen: 512,
  });
  const inputs = batchFor(policy, c);
  const N = inputs.prompts.length * c.groupSize,
    W = c.maxNewTokens;
  const dirs: string[] = [];
  const twins: TwinServer[] = [];
  try {
    // ---- generation: greedy tokens equal, then sampled rollouts timed in pairs ----------------
    say('[bench] --vs-pytorch: generation, equality check then paired timing');
    const gdir = await handOver(policy, inputs, { threads, maxNewTokens: W, temperature: 1.0 });
    dirs.push(gdir);
    const gtwin = new TwinServer(gdir, 'generate');
    twins.push(gtwin);
    const info = (await gtwin.ready()) as { torch: string };
    const greedy = await policy.generate(inputs, { maxNewTokens: W, greedy: true, stop: [] });
    const pyTok = readI32(path.join(gdir, 'py_greedy_tokens.bin')),
      pyLp = readF32(path.join(gdir, 'py_greedy_logprobs.bin'));
    let same = 0,
      maxLp = 0;
    for (let r = 0; r < N; r++) {
      for (let s = 0; s < W; s++) {
        const i = r * W + s;
        if (greedy.ids[i] !== pyTok[i]) break; // after a divergence the rows condition on different tokens
        same++;
        maxLp = Math.max(maxLp, Math.abs(greedy.logprobs[i] - pyLp[i]));
      }
    }
    if (same !== N * W || maxLp > LOGP_ATOL) {
      throw new Error(
        `native and PyTorch greedy decoding disagree: ${same}/${N * W} tokens equal, max log-prob difference ` +
          `${maxLp.toExponential(2)} (tolerance ${LOGP_ATOL})`,
      );
    }
    const generate = {
      ...(await pairedTiming(
        gtwin,
        () => policy.generate(inputs, { maxNewTokens: W, temperature: 1.0, stop: [] }),
        threads,
        2,
        5,
      )),
      tokens: N * W,
    };
    gtwin.close();

    // ---- train step: loss and gradient norm equal on the same weights and batch, then timed -----
    say('[bench] --vs-pytorch: train step, equality check then paired timing');
    const rand = lcg(5);
    const V = tok.size;
    const ids = Int32Array.from({ length: N * W }, () => 6 + Math.floor(rand() * (V - 6)));
    const lengths = Int32Array.from({ length: N }, () => Math.max(1, W - Math.floor(rand() * Math.min(4, W))));
    const cur = (await policy.logprobs(inputs, { ids, lengths, width: W })).logprobs;
    const comp: RlCompletions = {
      ids,
      lengths,
      width: W,
      oldLogprobs: Float32Array.from(cur, (x) => x + (rand() - 0.5) * 0.3),
      refLogprobs: Float32Array.from(cur, (x) => x + (rand() - 0.5) * 0.3),
      advantages: Float32Array.from({ length: N }, () => (rand() - 0.5) * 2),
    };
    const tdir = await handOver(policy, inputs, { threads, step: TWIN_TRAIN_STEP }, comp);
    dirs.push(tdir);
    const ttwin = new TwinServer(tdir, 'train');
    twins.push(ttwin);
    const py = (await ttwin.ready()) as { check: { loss: number; gradNorm: number } };
    // A second policy with the same weights takes one unclipped step without decay (the timed one keeps its own).
    const probe = await PolicyModel.create(tok, { ...policy.config });
    await probe.setWeights(await policy.getWeights());
    const st = await probe.trainStep(inputs, comp, { ...TWIN_TRAIN_STEP, weightDecay: 0, maxGradNorm: 0 });
    probe.dispose();
    const lossRel = Math.abs(st.loss - py.check.loss) / Math.max(Math.abs(py.check.loss), 1e-8);
    const normRel = Math.abs(st.gradNorm - py.check.gradNorm) / Math.max(py.check.gradNorm, 1e-12);
    if (lossRel > LOSS_RTOL || normRel > NORM_RTOL) {
      throw new Error(
        `native and PyTorch train steps disagree: loss ${st.loss} vs ${py.check.loss} (rel ` +
          `${lossRel.toExponential(2)}, tolerance ${LOSS_RTOL}), grad norm ${st.gradNorm} vs ${py.check.gradNorm} ` +
          `(tolerance ${NORM_RTOL})`,
      );
    }
    const trainStep = await pairedTiming(ttwin, () => policy.trainStep(inputs, comp, TWIN_TRAIN_STEP), threads, 2, 5);
    return {
      available: true,
      pytorch: info.torch,
      threads,
      check: {
        greedyTokensEqual: same,
        greedyTokens: N * W,
        maxLogprobDiff: maxLp,
        lossNative: st.loss,
        lossPyTorch: py.check.loss,
        lossRel,
        gradNormNative: st.gradNorm,
        gradNormPyTorch: py.check.gradNorm,
      },
      generate,
      trainStep,
    };
  } finally {
    for (const t of twins) t.close();
    policy.dispose();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
}

export function formatVsPytorch(v: VsPytorchResult): string {
  if (!v.available) return `--vs-pytorch: not run: ${v.reason}`;
  const g = v.generate!,
    t = v.trainStep!,
    k = v.check!;
  return [
    `--vs-pytorch: the native tiny policy vs its PyTorch ${v.pytorch} eager twin (bench/pytorch/policy_twin.py), ` +
      `same weights and batch, ${v.threads} threads, ${g.runs} back-to-back pairs after warm-up. ` +
      `Checked equal first: greedy tokens ${k.greedyTokensEqual}/${k.greedyTokens}, max log-prob difference ` +
      `${k.maxLogprobDiff.toExponential(1)}; ` +
      `train-step loss ${fixed(k.lossNative, 6)} vs ${fixed(k.lossPyTorch, 6)}, grad norm ` +
      `${fixed(k.gradNormNative, 5)} vs ${fixed(k.gradNormPyTorch, 5)}.`,
    '',
    markdownTable(
      ['call', 'PyTorch median ms', 'native median ms', 'speed-up', 'median of paired ratios'],
      [
        [
          `generate (${g.tokens} tokens)`,
          fixed(g.pytorchMs, 1),
          fixed(g.nativeMs, 1),
          fixed(g.speedup),
          fixed(g.pairedSpeedup),
        ],
        [
          'train step (fwd, loss, bwd, clip, AdamW)',
          fixed(t.pytorchMs, 1),
          fixed(t.nativeMs, 1),
          fixed(t.speedup),
          fixed(t.pairedSpeedup),
        ],
      ],
    ),
  ].join('\n');
}
