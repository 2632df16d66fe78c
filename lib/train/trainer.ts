/**
 * The CRPO training loop (crpo-method.md sections 2-7), one readable function:
 *   data -> route -> counterfactual frames -> rollouts on both branches -> rewards and advantages
 *   (fused native kernels, lib/algo) -> update (mu epochs on the section-6 loss, old log-probs from
 *   the rollout, a frozen reference) -> log.
 * Validation on held-out pairs before training and every N steps, checkpoints every N steps and
 * at the end, bitwise resume (data order, sampling seeds and optimiser state are all functions of
 * the checkpoint), non-finite steps skipped and logged.
 */
import * as fs from 'fs';
import * as path from 'path';
import { performance } from 'perf_hooks';
import { getAlgorithm, type AlgoSettings, type ScoredGroupInput } from '../algo';
import { CrpoError } from '../errors';
import { computeMetrics } from '../eval/metrics';
import { greedySamples } from '../eval/policy-answers';
import { formatPrompt, parseAnswer } from '../prompt';
import { Rng, hash32 } from '../random';
import { colourShortcutRate } from '../synth';
import {
  POLICY_KINDS,
  recordPrompt,
  type Completion,
  type Policy,
  type PolicyPrompt,
  type TrainSequence,
} from '../policy/policy';
import '../policy/linear';
import '../policy/native';
import '../policy/qwen';
import { assertFiniteWeights } from '../policy/checkpoint-folder';
import { ConfigError, learningRate, saveResolvedConfig, type TrainConfig } from './config';
import {
  checkResumeDigest,
  lockRunFolder,
  resumeTarget,
  saveCheckpoint,
  readState,
  type TrainState,
} from './checkpoint';
import {
  batchIndices,
  counterfactualFrames,
  deviceTransform,
  loadTrainData,
  reversedFrames,
  shardBatch,
  shuffledFrames,
  SINGLE_PROCESS,
  type TrainDistContext,
  type TrainItem,
  type ValItem,
} from './data';
import { Progress, RunLog, writePlots, type MetricLine } from './logging';

export interface TrainHooks {
  /** Called after each step's metrics line (after the checkpoint of that step, if any). */
  onStep?(line: MetricLine): void | Promise<void>;
  /** Called with each validation result. */
  onValidation?(line: MetricLine): void;
  /** Test hook: may change the sequences of an update before it runs. */
  beforeUpdate?(seqs: TrainSequence[], step: number): void;
  /** Multi-process context (lib/distributed); single process when absent. */
  dist?: TrainDistContext;
  /** Progress / message sink (default stderr). */
  log?(message: string): void;
}

export interface ValidationResult {
  step: number;
  acc: number;
  p_acc: number;
  sensitivity: number | null;
  invariance: number | null;
  'dynamic/acc': number;
  'dynamic/p_acc': number;
  /** Accuracy on the held-out static questions (null when there are none). */
  'static/acc': number | null;
  /** Share of held-out answers that did not parse. */
  invalid: number;
  /** Held-out dynamic videos whose colour names a wrong option: share answered with that option (synthetic data). */
  'dynamic/colour_shortcut': number | null;
}

export interface TrainResult {
  runDir: string;
  steps: number;
  resumedFrom?: string;
  validation: ValidationResult[];
  digest: string;
  plots: string[];
  skippedSteps: number;
  /** Steps on which no sampled answer of the original branch parsed (format reward 0 for all). */
  invalidSteps: number;
}

function algoSettings(c: TrainConfig): AlgoSettings {
  return {
    groupSize: c.groupSize,
    cfGroupSize: c.cfGroupSize,
    nullOption: c.nullOption,
    norm: c.norm,
    eps: c.advEps,
    weights: c.weights,
    tgrpo: c.tgrpo,
    arrow: c.arrow,
  };
}

/** Greedy answers on every held-out record; paired metrics (crpo-method.md section 8). */
export async function validate(
  policy: Policy,
  val: readonly ValItem[],
  nullOption: boolean,
  step: number,
  maxNewTokens: number,
): Promise<ValidationResult> {
  const samples = await greedySamples(policy, val, nullOption, maxNewTokens);
  const g = computeMetrics(samples).groups;
  return {
    step,
    acc: g.all?.acc ?? 0,
    p_acc: g.all?.p_acc ?? 0,
    sensitivity: g.all?.sensitivity ?? null,
    invariance: g.all?.invariance ?? null,
    'dynamic/acc': g.dynamic?.acc ?? 0,
    'dynamic/p_acc': g.dynamic?.p_acc ?? 0,
    'static/acc': g.static?.acc ?? null,
    invalid: g.all?.invalid_rate ?? 0,
    'dynamic/colour_shortcut': colourShortcutRate(
      val.map((v) => v.record),
      samples.map((x) => x.prediction),
    ),
  };
}

/**
 * Every rank must start from the same step: each one reads the checkpoint from the run folder, so
 * a rank that does not see rank 0's folder (no shared file system) would start elsewhere, run other
 * collectives and hang the others. One all-reduce of (1, s, s^2): equal steps iff n * sum(s^2) = sum(s)^2.
 */
async function requireSameResumePoint(
  dist: TrainDistContext,
  step: number,
  out: string,
  policy: Policy,
): Promise<void> {
  if (dist.worldSize <= 1) return;
  const [n, sum, sq] = await dist.allReduceSum([1, step, step * step]);
  if (n * sq === sum * sum) return;
  policy.dispose();
  throw new CrpoError(
    'ERR_CRPO_DIST_RESUME',
    `rank ${dist.rank} of ${dist.worldSize} starts at step ${step}, but the ranks do not all start at the same step ` +
      `(mean ${sum / n}): every rank must see the same run folder ${out} (a file system shared by all nodes)`,
  );
}

/** Creates the configured policy: fresh / from `policy.init`, or from a checkpoint to resume. */
export async function createPolicy(c: TrainConfig, resumeFrom?: string, texts?: readonly string[]): Promise<Policy> {
  return POLICY_KINDS.get(c.policy.kind)({
    init: c.policy.init || undefined,
    seed: c.seed,
    resumeFrom,
    preset: c.policy.preset,
    texts,
    frames: c.data.frames,
    size: c.data.size,
    finetune: c.policy.finetune,
  });
}

/** Every prompt text of the data with and without the null option, plus the answers (a vocabulary for policies that need one). */
export function dataTexts(records: readonly { question: string; options: string[] }[]): string[] {
  const out: string[] = [];
  for (const r of records)
    out.push(
      formatPrompt(r.question, r.options, { nullOption: true }),
      formatPrompt(r.question, r.options, { nullOption: false }),
    );
  return out;
}

/**
 * Refuses a policy kind whose train step does not average gradients over the ranks
 * (Policy.syncsGradients) when there is more than one process: every rank would update its own
 * replica on its own shard and rank 0 would save a model trained on 1/N of the data. Disposes it.
 */
export function requireGradientSync(policy: Policy, worldSize: number): void {
  if (worldSize <= 1 || policy.syncsGradients === true) return;
  policy.dispose();
  throw new CrpoError(
    'ERR_CRPO_DIST_NO_GRAD_SYNC',
    `policy kind '${policy.kind}' does not synchronise gradients across processes, ` +
      `so ${worldSize} processes would train ${worldSize} diverging replicas; ` +
      'run it on one process (no --nproc, torchrun or srun with more than one task)',
  );
}

/**
 * Refuses `zero: 1` where it would do nothing: on one process (nothing to shard: use --zero 0, or
 * run on several processes) and, given the policy, for a kind without a sharded optimizer (linear,
 * native); then disposes the policy. Without `policy` only the world size is checked.
 */
export function requireZeroSupport(zero: 0 | 1, worldSize: number, policy?: Policy): void {
  if (zero !== 1) return;
  if (worldSize <= 1)
    throw new ConfigError(
      '--zero 1 (zero): shards the AdamW state over the processes, but this run has 1 process, so there is ' +
        'nothing to shard; run on several processes (--nproc N, torchrun, srun) or use --zero 0',
    );
  if (policy && policy.shardsOptimizerState !== true) {
    policy.dispose();
    throw new ConfigError(
      `--zero 1 (zero): policy kind '${policy.kind}' has no sharded optimizer state (only 'qwen' has), ` +
        'so every rank would keep the whole AdamW state anyway; use --zero 0',
    );
  }
}

/**
 * The sequences of one update: prompt b's original rollouts (prompt row b) and, when the plan
 * trains the second branch, its second-branch rollouts (prompt row B + b), each with its
 * advantage and sampled log-probs. `skip(b)` leaves a prompt group out (zero-variance filter).
 */
export function updateSequences(
  orig: readonly Completion[][],
  second: readonly Completion[][],
  scores: { origAdvantage: ArrayLike<number>; secondAdvantage: ArrayLike<number> },
  plan: { G: number; H: number; trainSecond: boolean },
  skip: (b: number) => boolean = () => false,
): TrainSequence[] {
  const seqs: TrainSequence[] = [];
  const B = orig.length;
  for (let b = 0; b < B; b++) {
    if (skip(b)) continue;
    orig[b].forEach((x, i) =>
      seqs.push({
        prompt: b,
        tokens: x.tokens,
        advantage: scores.origAdvantage[b * plan.G + i],
        oldLogprobs: x.logprobs,
      }),
    );
    if (plan.trainSecond) {
      second[b].forEach((x, j) =>
        seqs.push({
          prompt: B + b,
          tokens: x.tokens,
          advantage: scores.secondAdvantage[b * plan.H + j],
          oldLogprobs: x.logprobs,
        }),
      );
    }
  }
  return seqs;
}

const mean = (xs: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i];
  return xs.length ? s / xs.length : 0;
};

/**
 * Runs (or resumes) one training run as configured. The main rank holds the run folder's lock
 * (lib/train/checkpoint.ts lockRunFolder) for the whole run: a second trainer on the same --out
 * stops with the holder's pid and command instead of writing into the folder too.
 */
export async function train(c: TrainConfig, hooks: TrainHooks = {}): Promise<TrainResult> {
  const unlock = (hooks.dist ?? SINGLE_PROCESS).rank === 0 ? lockRunFolder(c.out) : () => undefined;
  try {
    return await trainLocked(c, hooks);
  } finally {
    unlock();
  }
}

async function trainLocked(c: TrainConfig, hooks: TrainHooks): Promise<TrainResult> {
  const dist = hooks.dist ?? SINGLE_PROCESS;
  const main = dist.rank === 0;
  const say = hooks.log ?? ((m: string) => process.stderr.write(m + '\n'));
  const algo = getAlgorithm(c.algo);
  const settings = algoSettings(c);
  const plan = algo.plan(settings);
  requireZeroSupport(c.zero, dist.worldSize);

  // ---- data + run folder + resume point --------------------------------------------------
  const { train: items, val } = await loadTrainData(c);
  const resumeDir = resumeTarget(c.out, c.resume);
  const state: TrainState | undefined = resumeDir ? readState(resumeDir) : undefined;
  if (state && state.algo !== c.algo) say(`warning: resuming a '${state.algo}' checkpoint with algo '${c.algo}'`);
  // Non-finite weights would skip every step and still exit 0: refused before any work.
  if (resumeDir) assertFiniteWeights(resumeDir, '--resume');
  else if (c.policy.init) assertFiniteWeights(c.policy.init, '--init');
  if (main) saveResolvedConfig(c, c.out);
  const policy = await createPolicy(
    c,
    resumeDir,
    dataTexts([...items.map((x) => x.record), ...val.map((x) => x.record)]),
  );
  if (state && resumeDir) {
    try {
      checkResumeDigest(resumeDir, state, await policy.weightsDigest());
    } catch (err) {
      policy.dispose();
      throw err;
    }
  }
  requireGradientSync(policy, dist.worldSize);
  requireZeroSupport(c.zero, dist.worldSize, policy);
  await requireSameResumePoint(dist, state ? state.step : 0, c.out, policy);
  if (!state) await policy.freezeReference(); // the reference is the initial policy; a resumed run restores it
  const log = await RunLog.open(c.out, state ? state.step : -1, main, state?.step === c.steps);
  const startStep = state ? state.step : 0;
  if (state) say(`resuming from ${resumeDir} (step ${state.step})`);

  // A resumed run starts with the validation results it already logged.
  const valFile = path.join(c.out, 'val.jsonl');
  const validation: ValidationResult[] =
    state && fs.existsSync(valFile)
      ? fs
          .readFileSync(valFile, 'utf8')
          .split('\n')
          .filter((l) => l.trim())
          .map((l) => JSON.parse(l) as ValidationResult)
      : [];
  const runValidation = async (step: number): Promise<void> => {
    if (val.length === 0) return;
    const v = await validate(policy, val, plan.nullOption, step, c.maxNewTokens);
    if (v.invalid === 1)
      say(`warning: validation at step ${step}: no held-out answer parsed (maxNewTokens ${c.maxNewTokens})`);
    validation.push(v);
    await log.validation({ ...v });
    hooks.onValidation?.({ ...v });
  };
  if (!state) await runValidation(0);

  const progress = new Progress(c.steps, startStep, c.progress && main);
  let skippedSteps = 0;
  let invalidSteps = 0;
  // Steps on which every group's rewards were equal on every rank: no advantage, no reward signal.
  let flatSteps = 0;
  try {
    for (let step = startStep; step < c.steps; step++) {
      const tStep = performance.now();
      // ---- 1. data: this step's prompts (seeded epoch order), this rank's share -----------
      const order = batchIndices(items.length, c.batchSize, c.seed, step);
      const batch: TrainItem[] = shardBatch(
        order.map((i) => items[i]),
        dist,
      );
      // Position of each of this rank's prompts in the step's global batch: what its randomness is keyed by.
      const globalIndex: number[] = shardBatch(
        order.map((_, j) => j),
        dist,
      );

      // ---- 2. route + second-branch frames ----------------------------------------------
      const origPrompts = batch.map((it) => recordPrompt(it.record, it.frames, it.shape, plan.nullOption));
      // A kind with device transforms gets the original clip and the transform's name: the clip
      // crosses into native code once per step. T-GRPO's shuffle (a random frame order, not a
      // fixed transform) and the kinds without device transforms get frames made here.
      const onDevice = policy.deviceTransforms === true;
      const secondPrompts =
        plan.second === 'none'
          ? []
          : batch.map((it, b) => {
              if (onDevice && plan.second !== 'shuffled') {
                const t = plan.second === 'reversed' ? { transform: 'reverse' as const } : deviceTransform(it);
                return { ...recordPrompt(it.record, it.frames, it.shape, plan.nullOption), ...t };
              }
              const frames =
                plan.second === 'counterfactual'
                  ? counterfactualFrames(it)
                  : plan.second === 'reversed'
                    ? reversedFrames(it)
                    : shuffledFrames(it, new Rng(`crpo-train|${c.seed}|step|${step}|shuffle|${globalIndex[b]}`));
              return recordPrompt(it.record, frames, it.shape, plan.nullOption);
            });

      // ---- 3. rollouts on both branches -------------------------------------------------
      // Each prompt's seed is a function of (run seed, step, branch, its global position), not of
      // the rank: N processes sample exactly the rollouts of one process on the same global batch.
      const tRollout = performance.now();
      const gen = { temperature: c.temperature, maxNewTokens: c.maxNewTokens };
      const seedsOf = (branch: string): number[] => globalIndex.map((j) => hash32(`${c.seed}|${step}|${branch}|${j}`));
      const orig: Completion[][] = await policy.generate(origPrompts, {
        ...gen,
        samples: plan.origSamples,
        seed: hash32(`${c.seed}|${step}|orig`),
        promptSeeds: seedsOf('orig'),
      });
      const second: Completion[][] =
        plan.secondSamples > 0
          ? await policy.generate(secondPrompts, {
              ...gen,
              samples: plan.secondSamples,
              seed: hash32(`${c.seed}|${step}|second`),
              promptSeeds: seedsOf('second'),
            })
          : [];
      const rolloutSeconds = (performance.now() - tRollout) / 1000;

      // ---- 4. rewards and advantages (fused kernels) -------------------------------------
      const tReward = performance.now();
      const parse = (cs: Completion[], k: number) => cs.map((x) => parseAnswer(x.text, k));
      const groups: ScoredGroupInput[] = batch.map((it, b) => {
        const k = origPrompts[b].options.length;
        const po = parse(orig[b], k),
          ps = second.length ? parse(second[b], k) : [];
        return {
          truth: it.record.answer,
          numOptions: k,
          relation: it.route.relation,
          origAnswers: po.map((p) => p.index),
          origFormat: po.map((p) => (p.formatOk ? 1 : 0)),
          secondAnswers: ps.map((p) => p.index),
          secondFormat: ps.map((p) => (p.formatOk ? 1 : 0)),
        };
      });
      const scores = algo.score(groups, settings);
      const G = plan.origSamples,
        H = plan.secondSamples;
      const allPrompts: PolicyPrompt[] = [...origPrompts, ...secondPrompts];
      const seqs = updateSequences(
        orig,
        second,
        scores,
        { G, H, trainSecond: plan.trainSecond },
        (b) => c.filterZeroVariance && scores.flat[b] !== 0,
      );
      const rewardSeconds = (performance.now() - tReward) / 1000;
      // No parsable answer at all: every reward is the same, nothing is learned. Say so, loudly.
      const validShare = Number(scores.components['orig/format'] ?? 1);
      if (validShare === 0) {
        invalidSteps++;
        if (invalidSteps === 1 || invalidSteps % 10 === 0) {
          say(
            `warning: step ${step + 1}: no sampled answer parsed as <answer>X</answer> (${invalidSteps} such step(s) so far); ` +
              `maxNewTokens is ${c.maxNewTokens}: is it long enough for this policy's answers?`,
          );
        }
      }

      // ---- 5. update: frozen-reference log-probs, then mu passes over the batch ----------
      const tUpdate = performance.now();
      if (c.beta > 0 && seqs.length) {
        const ref = await policy.logprobs(allPrompts, seqs, { temperature: c.temperature, reference: true });
        seqs.forEach((s, i) => {
          s.refLogprobs = ref[i];
        });
      }
      hooks.beforeUpdate?.(seqs, step);
      const lr = learningRate(c, step);
      let upd = { loss: 0, pgLoss: 0, kl: 0, clipFraction: 0, gradNorm: 0, entropy: 0, tokens: 0, skipped: false };
      // With several ranks every rank steps, also one left with no sequences: the step's gradient all-reduce needs all of them.
      for (let e = 0; e < c.updateEpochs && (seqs.length || dist.worldSize > 1); e++) {
        const s = await policy.trainStep(allPrompts, seqs, {
          processGroup: dist.nativeGroupId,
          // ZeRO-1: each rank keeps 1/W of the AdamW state (refused above where it would do nothing)
          ...(c.zero === 1 ? { zero: 1 as const } : {}),
          // dropout masks from (seed, step, epoch): a resumed run draws what the uninterrupted one drew
          seed: hash32(`${c.seed}|${step}|update|${e}`),
          lr,
          maxGradNorm: c.maxGradNorm,
          weightDecay: c.weightDecay,
          temperature: c.temperature,
          clipLow: c.clipLow,
          clipHigh: c.clipHigh,
          beta: c.beta,
          aggregation: c.aggregation,
          maxNewTokens: c.maxNewTokens,
        });
        if (e === 0) upd = { ...s };
        else upd = { ...s, tokens: upd.tokens + s.tokens, skipped: upd.skipped || s.skipped };
        if (s.skipped) break; // nothing was applied: the weights stay those of the last good step
      }
      if (upd.skipped) {
        skippedSteps++;
        say(
          `step ${step + 1}: non-finite loss or gradient (loss ${upd.loss}, grad norm ${upd.gradNorm}); update skipped`,
        );
      }
      const updateSeconds = (performance.now() - tUpdate) / 1000;

      // ---- 6. log ---------------------------------------------------------------------
      const stepSeconds = (performance.now() - tStep) / 1000;
      const samples = batch.length * (G + H);
      const genTokens = [...orig, ...second].reduce((a, cs) => a + cs.reduce((b, x) => b + x.tokens.length, 0), 0);
      const line: MetricLine = {
        step: step + 1,
        lr,
        ...scores.components,
        accuracy: scores.components['orig/correct'] ?? 0,
        zero_variance_share: mean(scores.flat),
        loss: Number.isFinite(upd.loss) ? upd.loss : String(upd.loss),
        pg_loss: upd.pgLoss,
        kl: upd.kl,
        entropy: upd.entropy,
        clip_fraction: upd.clipFraction,
        grad_norm: Number.isFinite(upd.gradNorm) ? upd.gradNorm : String(upd.gradNorm),
        skipped: upd.skipped,
        sequences: seqs.length,
        tokens: upd.tokens,
        completion_length: genTokens / Math.max(1, samples),
        tokens_per_s: genTokens / Math.max(1e-9, stepSeconds),
        samples_per_s: samples / Math.max(1e-9, stepSeconds),
        rollout_seconds: rolloutSeconds,
        reward_seconds: rewardSeconds,
        update_seconds: updateSeconds,
        step_seconds: stepSeconds,
      };
      if (dist.worldSize > 1) {
        // Counts and rates are summed over the ranks, times averaged, and per-prompt means are
        // weighted by each rank's number of prompts (shards differ by one when the batch does not split evenly).
        const keys = Object.keys(line).filter((k) => typeof line[k] === 'number' && k !== 'step' && k !== 'lr');
        const summed = (k: string) => /_per_s$|^sequences$|^tokens$/.test(k);
        const w = batch.length;
        const sums = await dist.allReduceSum([
          ...keys.map((k) => (summed(k) || k.endsWith('seconds') ? (line[k] as number) : (line[k] as number) * w)),
          w,
        ]);
        const prompts = sums[keys.length];
        keys.forEach((k, i) => {
          line[k] = summed(k)
            ? sums[i]
            : k.endsWith('seconds')
              ? sums[i] / dist.worldSize
              : prompts > 0
                ? sums[i] / prompts
                : 0;
        });
      }
      if (line.zero_variance_share === 1) {
        flatSteps++;
        if (main && (flatSteps === 1 || flatSteps % 10 === 0)) {
          say(
            `warning: step ${step + 1}: every group's rewards were equal (${flatSteps} such step(s) so far): ` +
              'no advantage, so the rewards taught this step nothing (is the policy able to answer any of them?)',
          );
        }
      }
      await log.step(line);
      if (c.dumpEvery > 0 && (step + 1) % c.dumpEvery === 0) {
        await log.dump(
          batch.map((it, b) => ({
            step: step + 1,
            id: it.record.id,
            transform: it.route.transform,
            relation: it.route.relation,
            truth: it.record.answer,
            orig: orig[b].map((x, i) => ({
              text: x.text,
              reward: scores.origReward[b * G + i],
              advantage: scores.origAdvantage[b * G + i],
            })),
            second: (second[b] ?? []).map((x, j) => ({
              branch: plan.second,
              text: x.text,
              reward: scores.secondReward[b * H + j],
              advantage: scores.secondAdvantage[b * H + j],
            })),
          })),
        );
      }
      const done = step + 1;
      if (c.valEvery > 0 && done % c.valEvery === 0 && done !== c.steps) await runValidation(done);
      const saveNow = done % c.saveEvery === 0 || done === c.steps;
      // With zero 1 saving is collective (each rank holds 1/W of the AdamW moments, gathered for
      // the save): rank 0 writes the checkpoint, every other rank takes part in the gather.
      if (saveNow && !main && c.zero === 1) await policy.joinSave?.();
      if (main && saveNow) {
        log.sync();
        await saveCheckpoint(
          c.out,
          policy,
          {
            step: done,
            cursor: done * c.batchSize,
            seed: c.seed,
            algo: c.algo,
            digest: await policy.weightsDigest(),
            nullOption: plan.nullOption,
          },
          c.keepLast,
        );
      }
      progress.update(done, stepSeconds, {
        reward: Number(scores.components['orig/reward'] ?? 0),
        acc: Number(line.accuracy),
        valid: validShare,
        ...(scores.components.crr !== undefined ? { crr: scores.components.crr } : {}),
      });
      await hooks.onStep?.(line);
    }
    await runValidation(c.steps);
    if (main && flatSteps > 0) {
      say(
        `warning: on ${flatSteps} of ${c.steps - startStep} steps every group's rewards were equal: no reward signal on those steps`,
      );
    }
    if (invalidSteps > 0) {
      say(
        `warning: on ${invalidSteps} of ${c.steps - startStep} steps no sampled answer parsed (format reward 0 for every rollout)`,
      );
    }
    const plots = main && c.plots ? await writePlots(c.out, `crpo train --algo ${c.algo}`) : [];
    return {
      runDir: path.resolve(c.out),
      steps: c.steps,
      resumedFrom: resumeDir,
      validation,
      digest: await policy.weightsDigest(),
      plots,
      skippedSteps,
      invalidSteps,
    };
  } finally {
    await log.close();
    policy.dispose();
  }
}

/** The newest checkpoint folder of a finished run (for evaluation / serving). */
export function finalCheckpoint(out: string): string | undefined {
  const dir = path.join(out, 'checkpoints');
  if (!fs.existsSync(dir)) return undefined;
  const names = fs
    .readdirSync(dir)
    .filter((n) => /^step-\d+$/.test(n))
    .sort();
  return names.length ? path.join(dir, names[names.length - 1]) : undefined;
}
