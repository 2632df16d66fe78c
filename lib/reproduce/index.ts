/**
 * `crpo reproduce`: a small-scale reproduction of the paper's main comparison (crpo-method.md
 * sections 7-10) on the synthetic DyBench with the static shortcut on (object colour names the
 * dynamic answer in the train split, independent of it in the held-out split). From one base
 * model (the trainer's supervised warm start, lib/train sftBase, on the shortcut train split, so
 * that it starts out leaning on colour, as pretrained video LLMs lean on static cues), every method (GRPO, GRPO with 2G
 * rollouts, T-GRPO, ArrowRL, CRPO, CRPO without the dual-branch gradient) is trained for the same
 * number of steps with the project's trainer (lib/train `train`), over >= 3 seeds; each final
 * checkpoint is evaluated with greedy answers on held-out counterfactual pairs (Acc, P-Acc per
 * category, sensitivity, invariance), and held-out CRR (mean over pairs of p_o * p_c under
 * sampling, section 5) is measured at every saved checkpoint for the curves. Every run's result
 * is written atomically and skipped on a rerun with the same settings, and the trainer resumes an
 * interrupted run from its newest checkpoint, so an interrupted reproduction continues.
 */
import { spawn, type ChildProcess } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { writeFileAtomicSync } from '../data/jsonl';
import { computeMetrics, type ScoredSample } from '../eval/metrics';
import { greedySamples } from '../eval/policy-answers';
import { svgToPng } from '../eval/report';
import { CrpoError, outOfRange } from '../errors';
import { parseAnswer } from '../prompt';
import { POLICY_KINDS, recordPrompt, type Policy } from '../policy/policy';
import { colourShortcutRate, synthesize } from '../synth';
import { resolveConfig, type TrainConfig } from '../train/config';
import { listCheckpoints } from '../train/checkpoint';
import { train, finalCheckpoint } from '../train/trainer';
import { sftBase } from '../train/base-model';
import { ALGORITHMS } from '../algo';
import { coreShareEnv } from '../distributed/launch';
import { newTokens, parseMethod, REPRODUCE_DEFAULTS, validateReproduceConfig, type ReproduceConfig } from './settings';
import { curvesSvg, mainTable, summarize, type CurvePoint, type MethodSummary, type RunResult } from './summary';

export * from './settings';
export * from './summary';

export interface ReproduceHooks {
  log?(message: string): void;
  /**
   * Runs trained at once, each in its own process with its share of the cores (default
   * defaultJobs: 1 for the linear policy, whose runs take about a second, so a process start
   * would cost more than it saves; else the cores, at most 8). 1 trains them one after another
   * in this process.
   */
  jobs?: number;
}

export interface ReproduceResult {
  summaries: MethodSummary[];
  runs: RunResult[];
  table: string;
  reportPath: string;
  plotPath: string;
  svgPath: string;
  summaryPath: string;
  wallMs: number;
}

interface EvalItem {
  record: ReturnType<typeof synthesize>[number]['record'];
  frames: Uint8Array;
  shape: [number, number, number, 3];
}

/** The run's trainer config (everything the trainer needs; validation off, checkpoints for the curves). */
function trainConfig(c: ReproduceConfig, method: string, seed: number, init: string, out: string): TrainConfig {
  const m = parseMethod(method);
  return resolveConfig({
    overrides: {
      algo: m.algo,
      seed,
      nullOption: c.nullOption,
      ...(m.norm ? { norm: m.norm } : {}),
      ...(m.crr !== undefined ? { weights: { crr: m.crr } } : {}),
      steps: c.steps,
      batchSize: c.batchSize,
      groupSize: c.groupSize,
      lr: c.lr,
      temperature: c.temperature,
      data: {
        train: 'synthetic',
        val: '',
        pairs: c.trainPairs,
        valPairs: 0,
        seed: c.dataSeed,
        shortcutP: c.shortcutP,
        frames: c.frames,
        size: c.size,
      },
      policy: { kind: c.policy, init },
      maxNewTokens: newTokens(c),
      out,
      resume: 'auto',
      progress: false,
      plots: false,
      valEvery: 0,
      dumpEvery: 0,
      saveEvery: c.curveEvery,
      keepLast: Math.ceil(c.steps / c.curveEvery) + 1,
    },
  });
}

/** Greedy answers on every held-out record -> paired metrics (the trainer's own validation, with all groups kept). */
async function evaluate(policy: Policy, items: readonly EvalItem[], nullOption: boolean, maxNewTokens: number) {
  const samples = await greedySamples(policy, items, nullOption, maxNewTokens);
  const nulls = nullOption ? samples.filter((x, i) => x.prediction === items[i].record.options.length).length : 0;
  return {
    metrics: computeMetrics(samples),
    shortcutRate: shortcutRate(items, samples),
    nullRate: nullOption && samples.length ? nulls / samples.length : null,
  };
}

/** Share of held-out dynamic predictions that follow the colour where the colour names a wrong option. */
function shortcutRate(items: readonly EvalItem[], samples: readonly ScoredSample[]): number | null {
  return colourShortcutRate(
    items.map((it) => it.record),
    samples.map((x) => x.prediction),
  );
}

/**
 * Held-out CRR: for each pair, p_o = accuracy of `samples` sampled answers on the original member,
 * p_c = the share of sampled answers on the counterfactual member that behave as expected (its
 * own gold answer: changed for dynamic pairs, kept for static ones); CRR = mean over pairs of p_o * p_c.
 */
async function heldOutCrr(
  policy: Policy,
  items: readonly EvalItem[],
  nullOption: boolean,
  maxNewTokens: number,
  samples: number,
  seed: number,
): Promise<{ crr: number }> {
  const prompts = items.map((it) => recordPrompt(it.record, it.frames, it.shape, nullOption));
  const out = await policy.generate(prompts, { samples, temperature: 1, maxNewTokens, seed });
  const byPair = new Map<string, { orig?: number; cf?: number }>();
  items.forEach((it, i) => {
    const acc =
      out[i].filter((x) => parseAnswer(x.text, prompts[i].options.length).index === it.record.answer).length / samples;
    const e = byPair.get(it.record.pair_id) ?? {};
    if (it.record.transform === 'none') e.orig = acc;
    else e.cf = acc;
    byPair.set(it.record.pair_id, e);
  });
  let crr = 0,
    n = 0;
  for (const e of byPair.values()) {
    if (e.orig === undefined || e.cf === undefined) continue;
    crr += e.orig * e.cf;
    n++;
  }
  return { crr: n ? crr / n : 0 };
}

/** Bumped when what a run result holds changes, so that older results are not reused. */
const RESULT_VERSION = 3;

function fingerprint(c: ReproduceConfig): string {
  const { out: _out, methods: _m, seeds: _s, force: _f, ...rest } = c;
  return crypto
    .createHash('sha256')
    .update(JSON.stringify({ v: RESULT_VERSION, ...rest }))
    .digest('hex')
    .slice(0, 16);
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** The settings the base model depends on (RL settings excluded, so that every RL variant reuses one base model). */
export function baseFingerprint(c: ReproduceConfig): string {
  const base = {
    policy: c.policy,
    trainPairs: c.trainPairs,
    shortcutP: c.shortcutP,
    dataSeed: c.dataSeed,
    frames: c.frames,
    size: c.size,
    baseSteps: c.baseSteps,
    baseShortcutSteps: c.baseShortcutSteps,
    basePromptLm: c.basePromptLm,
    baseRecipe: c.baseRecipe,
    baseLr: c.baseLr,
    baseBatchSize: baseBatch(c),
  };
  return crypto
    .createHash('sha256')
    .update(JSON.stringify({ v: RESULT_VERSION, base }))
    .digest('hex')
    .slice(0, 16);
}

const baseBatch = (c: ReproduceConfig): number => (c.baseBatchSize > 0 ? c.baseBatchSize : c.batchSize);

/**
 * The base model: the trainer's supervised warm start (lib/train sftBase) on the shortcut train
 * split, made once per base fingerprint and reused by every method, seed and later run in `c.out`
 * whose base settings match (changing only RL settings does not train it again).
 */
async function baseModel(c: ReproduceConfig, say: (m: string) => void): Promise<{ dir: string; wallMs: number }> {
  const dir = path.join(c.out, 'base');
  const marker = path.join(dir, 'base.json');
  const bfp = baseFingerprint(c);
  const done = readJson<{ fingerprint: string; wallMs?: number }>(marker);
  if (done && done.fingerprint === bfp && !c.force) {
    say(`base model: reused (${dir})`);
    return { dir: path.join(dir, 'checkpoint'), wallMs: done.wallMs ?? 0 };
  }
  const t0 = Date.now();
  fs.rmSync(path.join(dir, 'checkpoint'), { recursive: true, force: true });
  if (c.policy === 'native') {
    // The paper's starting point: sees and reads (phase 1), then leans on colour (phase 2).
    const { shortcutBase } = await import('../train/base-model');
    const r = await shortcutBase(dir, {
      capabilitySteps: c.baseSteps,
      shortcutSteps: c.baseShortcutSteps,
      batchSize: baseBatch(c),
      lr: c.baseLr,
      promptLm: c.basePromptLm,
      seed: c.dataSeed,
      recipe: c.baseRecipe,
      log: (m) => say(`base model: ${m}`),
    });
    const wallMs = Date.now() - t0;
    writeFileAtomicSync(
      marker,
      JSON.stringify(
        { fingerprint: bfp, steps: c.baseSteps + c.baseShortcutSteps, lastLoss: r.base.finalLoss, wallMs },
        null,
        2,
      ) + '\n',
    );
    say(
      `base model: ${c.baseSteps} + ${c.baseShortcutSteps} supervised steps in ${(wallMs / 1000).toFixed(1)} s -> ${r.base.checkpoint}`,
    );
    return { dir: r.base.checkpoint, wallMs };
  }
  const tc = trainConfig(c, c.methods[0], c.dataSeed, '', path.join(c.out, 'base-sft-run'));
  const r = await sftBase(tc, {
    steps: c.baseSteps,
    batchSize: baseBatch(c),
    lr: c.baseLr,
    nullOption: false,
    out: path.join(dir, 'checkpoint'),
  });
  const wallMs = Date.now() - t0;
  writeFileAtomicSync(
    marker,
    JSON.stringify(
      { fingerprint: bfp, steps: c.baseSteps, batchSize: baseBatch(c), lr: c.baseLr, lastLoss: r.finalLoss, wallMs },
      null,
      2,
    ) + '\n',
  );
  say(
    `base model: ${c.baseSteps} supervised warm-up steps on the shortcut train split in ${(wallMs / 1000).toFixed(1)} s (last loss ${r.finalLoss.toFixed(3)}) -> ${r.dir}`,
  );
  return { dir: r.dir, wallMs };
}

/** The held-out split: `evalPairs` pairs per category, seeded apart from the train split. */
function heldOutItems(c: ReproduceConfig): EvalItem[] {
  const shape: [number, number, number, 3] = [c.frames, c.size, c.size, 3];
  return synthesize({ split: 'test', pairs: c.evalPairs, seed: c.dataSeed + 2000, frames: c.frames, size: c.size }).map(
    (x) => ({ record: x.record, frames: x.frames, shape }),
  );
}

interface RunContext {
  c: ReproduceConfig;
  /** Fingerprint of the settings every run's result must carry. */
  fp: string;
  /** The base model's checkpoint. */
  init: string;
  /** The base model's held-out result (its CRR starts every curve). */
  base: RunResult;
  evalItems: EvalItem[];
  say: (m: string) => void;
}

const runDir = (c: ReproduceConfig, method: string, seed: number): string =>
  path.join(c.out, 'runs', method, `seed-${seed}`);

/** The result of a finished run of these settings, if there is one. */
function finishedRun(ctx: RunContext, method: string, seed: number): (RunResult & { fingerprint: string }) | undefined {
  const prior = readJson<RunResult & { fingerprint: string }>(path.join(runDir(ctx.c, method, seed), 'result.json'));
  return prior && prior.fingerprint === ctx.fp ? prior : undefined;
}

/** Trains one method x seed from the base model, measures its CRR curve, evaluates it and writes result.json. */
async function runOne(ctx: RunContext, method: string, seed: number, fresh: boolean): Promise<RunResult> {
  const { c, fp, init, base, evalItems, say } = ctx;
  const dir = runDir(c, method, seed);
  const resultFile = path.join(dir, 'result.json');
  // The trainer resumes from the newest checkpoint in `dir`; that is right only for an
  // interrupted run of the same settings (run.json holds their fingerprint), so a folder
  // left by other settings (or --force) is cleared first.
  const marker = path.join(dir, 'run.json');
  if (fs.existsSync(dir) && (fresh || readJson<{ fingerprint: string }>(marker)?.fingerprint !== fp))
    fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  writeFileAtomicSync(marker, JSON.stringify({ fingerprint: fp }) + '\n');
  const tRun = Date.now();
  const tc = trainConfig(c, method, seed, init, dir);
  const nullOption = ALGORITHMS.get(tc.algo).plan({
    groupSize: tc.groupSize,
    cfGroupSize: tc.cfGroupSize,
    nullOption: tc.nullOption,
    norm: tc.norm,
    eps: tc.advEps,
    weights: tc.weights,
    tgrpo: tc.tgrpo,
    arrow: tc.arrow,
  }).nullOption;
  await train(tc, { log: (m) => say(`${method} seed ${seed}: ${m}`) });
  // Held-out CRR at every kept checkpoint, from the base model's value at step 0.
  const curve: CurvePoint[] = [];
  const trainCurve = readMetrics(path.join(dir, 'metrics.jsonl'));
  const probes = new Map<number, number>([[0, base.curve[0].crr ?? 0]]);
  for (const ck of listCheckpoints(dir)) {
    const policy = await POLICY_KINDS.get(c.policy)({ init: ck.dir, seed });
    try {
      probes.set(ck.step, (await heldOutCrr(policy, evalItems, nullOption, tc.maxNewTokens, c.crrSamples, seed)).crr);
    } finally {
      policy.dispose();
    }
  }
  for (const p of trainCurve) curve.push({ step: p.step, correct: p.correct, crr: probes.get(p.step) ?? null });
  curve.unshift({ step: 0, correct: null, crr: probes.get(0)! });
  const last = finalCheckpoint(dir);
  if (!last)
    throw new CrpoError('ERR_CRPO_REPRODUCE', `${method} seed ${seed}: the trainer left no checkpoint in ${dir}`);
  const policy = await POLICY_KINDS.get(c.policy)({ init: last, seed });
  let ev;
  try {
    ev = await evaluate(policy, evalItems, nullOption, tc.maxNewTokens);
  } finally {
    policy.dispose();
  }
  const metrics = ev.metrics;
  const result: RunResult & { fingerprint: string; trainCrr: (number | null)[] } = {
    method,
    seed,
    steps: c.steps,
    curve,
    metrics,
    shortcutRate: ev.shortcutRate,
    nullRate: ev.nullRate,
    wallMs: Date.now() - tRun,
    fingerprint: fp,
    trainCrr: trainCurve.map((p) => p.crr),
  };
  writeFileAtomicSync(resultFile, JSON.stringify(result, null, 2) + '\n');
  // The intermediate checkpoints served the CRR curve; keep only the final one (~1 MB each for the linear policy).
  for (const ck of listCheckpoints(dir))
    if (path.resolve(ck.dir) !== path.resolve(last)) fs.rmSync(ck.dir, { recursive: true, force: true });
  const dyn = metrics.groups.dynamic;
  say(
    `${method} seed ${seed}: ${(result.wallMs / 1000).toFixed(1)} s; held-out dynamic Acc ${pctStr(dyn?.acc)}, P-Acc ${pctStr(dyn?.p_acc)}`,
  );
  return result;
}

/**
 * Trains `pending` runs in up to `jobs` child processes at once (lib/reproduce/worker), each with
 * its share of the cores; their output lines are passed to `say`. Every run is started even when
 * one fails (finished runs are kept); then the failures are reported together.
 */
async function runInProcesses(
  c: ReproduceConfig,
  pending: readonly { method: string; seed: number }[],
  jobs: number,
  say: (m: string) => void,
): Promise<void> {
  const ts = __filename.endsWith('.ts');
  const worker = path.join(__dirname, ts ? 'worker.ts' : 'worker.js');
  const execArgv = ts ? ['-r', path.resolve(__dirname, '../../scripts/ts-register.js')] : [];
  const env = { ...process.env, ...coreShareEnv(Math.min(jobs, pending.length)) };
  say(
    `training ${pending.length} runs in ${Math.min(jobs, pending.length)} processes (${env.CRPO_NUM_THREADS} thread(s) each)`,
  );
  const failures: string[] = [];
  const children = new Set<ChildProcess>();
  const stop = () => children.forEach((ch) => ch.kill('SIGTERM'));
  process.once('exit', stop);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < pending.length) {
      const { method, seed } = pending[next++];
      const args = [...execArgv, worker, c.out, method, String(seed), ...(c.force ? ['--fresh'] : [])];
      const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
      children.add(child);
      let tail = '';
      const lines = (chunk: Buffer) => {
        tail += chunk.toString();
        const parts = tail.split('\n');
        tail = parts.pop()!;
        for (const l of parts) if (l.trim()) say(l);
      };
      child.stdout!.on('data', lines);
      child.stderr!.on('data', lines);
      const code = await new Promise<number | null>((resolve) => {
        child.on('error', (err) => {
          failures.push(`${method} seed ${seed}: ${err.message}`);
          resolve(-1);
        });
        child.on('close', (code, signal) => resolve(signal ? -1 : code));
      });
      children.delete(child);
      if (tail.trim()) say(tail);
      if (code !== 0)
        failures.push(
          `${method} seed ${seed}: its process exited with ${code === -1 ? 'a signal or spawn error' : `code ${code}`} (output above)`,
        );
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, pending.length) }, lane));
  process.removeListener('exit', stop);
  if (failures.length)
    throw new CrpoError(
      'ERR_CRPO_REPRODUCE',
      `${failures.length} of ${pending.length} runs failed:\n  ${failures.join('\n  ')}`,
    );
}

/**
 * One run in a worker process (reproduce's `jobs` option): the settings come from
 * `<out>/reproduce-config.json` and the base model from `<out>/base`, both written by the parent.
 */
export async function runReproduceJob(out: string, method: string, seed: number, fresh: boolean): Promise<void> {
  const file = path.join(out, 'reproduce-config.json');
  const saved = readJson<ReproduceConfig & { fingerprint: string }>(file);
  if (!saved)
    throw new CrpoError(
      'ERR_CRPO_REPRODUCE',
      `${file}: missing or not JSON (the parent process writes it before starting runs)`,
    );
  const { fingerprint: savedFp, ...rest } = saved;
  const c = validateReproduceConfig({ ...REPRODUCE_DEFAULTS, ...rest, out, force: false });
  const fp = fingerprint(c);
  if (fp !== savedFp)
    throw new CrpoError(
      'ERR_CRPO_REPRODUCE',
      `${file}: settings fingerprint ${fp} differs from the recorded ${savedFp}`,
    );
  const base = readJson<RunResult>(path.join(out, 'base', 'result.json'));
  const baseMarker = readJson<{ fingerprint: string }>(path.join(out, 'base', 'base.json'));
  if (!base || baseMarker?.fingerprint !== baseFingerprint(c))
    throw new CrpoError(
      'ERR_CRPO_REPRODUCE',
      `${path.join(out, 'base')}: no base model of these settings (the parent process makes it first)`,
    );
  const say = (m: string) => process.stderr.write(m + '\n');
  await runOne(
    { c, fp, init: path.join(out, 'base', 'checkpoint'), base, evalItems: heldOutItems(c), say },
    method,
    seed,
    fresh,
  );
}

/** Runs at once when not told: 1 for the linear policy, else one per core (at most 8; each process loads libtorch). */
export function defaultJobs(c: Pick<ReproduceConfig, 'policy'>): number {
  return c.policy === 'linear' ? 1 : Math.max(1, Math.min(8, os.cpus().length));
}

/** Runs the whole comparison; writes summary.json, report.md, curves.svg/png under c.out. */
export async function reproduce(
  config: Partial<ReproduceConfig>,
  hooks: ReproduceHooks = {},
): Promise<ReproduceResult> {
  const c = validateReproduceConfig({ ...REPRODUCE_DEFAULTS, ...config });
  const jobs = hooks.jobs ?? defaultJobs(c);
  if (!Number.isInteger(jobs) || jobs < 1) throw outOfRange('jobs', 'an integer >= 1', jobs, 'crpo reproduce');
  const say = hooks.log ?? ((m: string) => process.stderr.write(m + '\n'));
  const t0 = Date.now();
  fs.mkdirSync(c.out, { recursive: true });
  const fp = fingerprint(c);
  writeFileAtomicSync(
    path.join(c.out, 'reproduce-config.json'),
    JSON.stringify({ ...c, fingerprint: fp }, null, 2) + '\n',
  );
  const evalItems = heldOutItems(c);
  const baseRun = await baseModel(c, say);
  const init = baseRun.dir;
  const baseDir = init;
  const maxNewTokens = newTokens(c);

  const runs: RunResult[] = [];
  // The base model, evaluated with the prompts of the baselines (with the null option when every method shows it).
  const baseNull = c.nullOption === true;
  const baseResultFile = path.join(path.dirname(baseDir), 'result.json');
  // Keyed by the base model and the evaluation settings only.
  const baseEvalFp = crypto
    .createHash('sha256')
    .update(
      JSON.stringify({
        base: baseFingerprint(c),
        evalPairs: c.evalPairs,
        crrSamples: c.crrSamples,
        maxNewTokens,
        baseNull,
      }),
    )
    .digest('hex')
    .slice(0, 16);
  let base = readJson<RunResult & { fingerprint: string }>(baseResultFile);
  if (!base || base.fingerprint !== baseEvalFp || c.force) {
    const policy = await POLICY_KINDS.get(c.policy)({ init, seed: 0 });
    try {
      const { metrics, shortcutRate: sr, nullRate } = await evaluate(policy, evalItems, baseNull, maxNewTokens);
      const probe = await heldOutCrr(policy, evalItems, baseNull, maxNewTokens, c.crrSamples, 0);
      base = {
        method: 'base',
        seed: 0,
        steps: 0,
        curve: [{ step: 0, correct: null, crr: probe.crr }],
        metrics,
        shortcutRate: sr,
        nullRate,
        wallMs: baseRun.wallMs,
        fingerprint: baseEvalFp,
      };
      writeFileAtomicSync(baseResultFile, JSON.stringify(base, null, 2) + '\n');
    } finally {
      policy.dispose();
    }
  }

  const ctx: RunContext = { c, fp, init, base, evalItems, say };
  const pending = c.methods
    .flatMap((method) => c.seeds.map((seed) => ({ method, seed })))
    .filter(({ method, seed }) => c.force || !finishedRun(ctx, method, seed));
  // With jobs > 1 the pending runs train in child processes first; the loop below then collects them.
  const parallel = jobs > 1 && pending.length > 1;
  if (parallel) await runInProcesses(c, pending, jobs, say);
  for (const method of c.methods) {
    for (const seed of c.seeds) {
      const prior = finishedRun(ctx, method, seed);
      const isPending = pending.some((r) => r.method === method && r.seed === seed);
      if (prior && (parallel || !isPending)) {
        if (!isPending)
          say(`${method} seed ${seed}: done earlier (${path.join(runDir(c, method, seed), 'result.json')})`);
        runs.push(prior);
        continue;
      }
      if (parallel)
        throw new CrpoError(
          'ERR_CRPO_REPRODUCE',
          `${method} seed ${seed}: its process left no result in ${runDir(c, method, seed)}`,
        );
      runs.push(await runOne(ctx, method, seed, c.force));
    }
  }

  const summaries = [
    summarize('base', [base]),
    ...c.methods.map((m) =>
      summarize(
        m,
        runs.filter((r) => r.method === m),
      ),
    ),
  ];
  const table = mainTable(summaries);
  const svg = curvesSvg(
    summaries.filter((s) => s.method !== 'base'),
    `crpo reproduce: synthetic DyBench, shortcut p = ${c.shortcutP}, policy ${c.policy}, ${c.seeds.length} seeds, ${c.steps} steps`,
  );
  const svgPath = path.join(c.out, 'curves.svg'),
    plotPath = path.join(c.out, 'curves.png');
  writeFileAtomicSync(svgPath, svg);
  writeFileAtomicSync(plotPath, await svgToPng(svg));
  const wallMs = Date.now() - t0;
  const summaryPath = path.join(c.out, 'summary.json');
  writeFileAtomicSync(summaryPath, JSON.stringify({ config: c, fingerprint: fp, wallMs, summaries }, null, 2) + '\n');
  const reportPath = path.join(c.out, 'report.md');
  writeFileAtomicSync(reportPath, report(c, summaries, table, wallMs));
  return { summaries, runs, table, reportPath, plotPath, svgPath, summaryPath, wallMs };
}

const pctStr = (x: number | null | undefined): string => (x === null || x === undefined ? 'n/a' : (100 * x).toFixed(1));

/** Training correctness (orig/correct) and training-time CRR per step from the trainer's metrics.jsonl. */
function readMetrics(file: string): { step: number; correct: number; crr: number | null }[] {
  if (!fs.existsSync(file)) return [];
  const out = new Map<number, { step: number; correct: number; crr: number | null }>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let v: Record<string, unknown>;
    try {
      v = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue; // a torn last line of an interrupted run
    }
    if (typeof v.step !== 'number' || typeof v['orig/correct'] !== 'number') continue;
    out.set(v.step, {
      step: v.step,
      correct: v['orig/correct'] as number,
      crr: typeof v.crr === 'number' ? v.crr : null,
    });
  }
  return [...out.values()].sort((a, b) => a.step - b.step);
}

/** How the base model was made, in words. */
function baseText(c: ReproduceConfig): string {
  if (c.policy !== 'native')
    return `${c.baseSteps} supervised warm-up steps (batch ${baseBatch(c)}, lr ${c.baseLr}) on the shortcut train split`;
  return (
    `${c.baseSteps} supervised steps of ${baseBatch(c)} fresh clips with colour independent of the answer (recipe ${c.baseRecipe}, lr ${c.baseLr}, ` +
    `prompt language-model loss ${c.basePromptLm}), then ${c.baseShortcutSteps} steps on fresh originals whose colour names the dynamic answer`
  );
}

/** The Markdown report: settings, the main table, the plot. */
export function report(c: ReproduceConfig, summaries: readonly MethodSummary[], table: string, wallMs: number): string {
  return [
    '## `crpo reproduce` results',
    '',
    `Synthetic DyBench, shortcut knob on (train split: object colour names the dynamic answer with p = ${c.shortcutP}; held-out split: colour independent of the answer). ` +
      `Policy '${c.policy}' on clips of ${c.frames} frames of ${c.size}x${c.size}; one base model = ${baseText(c)}, shared by every run; then ${c.steps} RL steps per method ` +
      `(batch ${c.batchSize} prompts, G = ${c.groupSize}, lr ${c.lr}), seeds ${c.seeds.join(', ')}; ${c.trainPairs} train pairs and ${c.evalPairs} held-out pairs per category. ` +
      `Wall time ${(wallMs / 60000).toFixed(1)} min.`,
    '',
    'Held-out paired metrics (percent, mean ± sample sd over seeds): Acc and P-Acc over the three dynamic categories (DyBench), P-Acc per category ' +
      '(RD reversible dynamics, MD moving direction, ES event sequence), sensitivity (dynamic pairs answered differently), invariance (static pairs answered the same), Static Acc, ' +
      'colour-shortcut answers (held-out dynamic videos whose object colour names a wrong option: the share answered with that option), ' +
      `and null-option answers (share of all held-out answers that are "None of the above", ${c.nullOption === true ? 'shown to every method' : 'which only the CRPO rows are shown'}; wrong for Acc, a change for sensitivity).`,
    '',
    table,
    '',
    '![training curves](curves.png)',
    '',
  ].join('\n');
}
