/**
 * `crpo sft`: supervised warm start of the native tiny policy on the synthetic DyBench train split
 * (lib/train/sft.ts), then Acc / P-Acc on the test split (crpo-method.md section 8).
 */
import type { Argv } from 'yargs';
import { SFT_DEFAULTS, runSft, type SftOptions, type SftProgress, type StaticAttribute } from '../../train/sft';
import type { Category } from '../../data/schema';
import type { PolicyPresetName } from '../../model/config';
import { initDistributed, runRank } from '../../distributed';
import { launchIfRequested } from '../../distributed/launch';

export function builder(y: Argv): Argv {
  return y
    .option('out', { type: 'string', demandOption: true, describe: 'Output folder (checkpoint/, sft-report.json)' })
    .option('preset', { choices: ['tiny', 'small'], default: SFT_DEFAULTS.preset, describe: 'Model preset' })
    .option('data', {
      choices: ['stream', 'fixed'],
      default: SFT_DEFAULTS.data,
      describe: 'stream: fresh synthetic pairs every step; fixed: --pairs pairs per category, --epochs passes',
    })
    .option('steps', {
      type: 'number',
      default: SFT_DEFAULTS.steps,
      describe: 'Stream: optimizer steps (0 = until --max-seconds)',
    })
    .option('members', {
      choices: ['both', 'original'],
      default: SFT_DEFAULTS.members,
      describe: 'Train on both members of each pair, or on the originals only',
    })
    .option('colour', {
      choices: ['independent', 'shortcut'],
      default: SFT_DEFAULTS.colour,
      describe: 'Object colour of dynamic training clips: independent of the answer, or naming it (--shortcut-p)',
    })
    .option('init', { type: 'string', default: '', describe: 'Start from this checkpoint (a second training phase)' })
    .option('pairs', { type: 'number', default: SFT_DEFAULTS.pairs, describe: 'Fixed: train pairs per category' })
    .option('test-pairs', { type: 'number', default: SFT_DEFAULTS.testPairs, describe: 'Test pairs per category' })
    .option('epochs', { type: 'number', default: SFT_DEFAULTS.epochs, describe: 'Fixed: passes over the train pairs' })
    .option('batch-size', { type: 'number', default: SFT_DEFAULTS.batchSize })
    .option('lr', { type: 'number', default: SFT_DEFAULTS.lr, describe: 'Peak learning rate (warm-up, cosine decay)' })
    .option('weight-decay', { type: 'number', default: SFT_DEFAULTS.weightDecay })
    .option('prompt-lm', {
      type: 'number',
      default: SFT_DEFAULTS.promptLm,
      describe: 'Weight of the language-model loss on the prompt text (0 = off; docs/model.md, "Levers")',
    })
    .option('reading', {
      type: 'number',
      default: SFT_DEFAULTS.reading,
      describe: 'Stream: share of clips asked a reading question ("Which option says red?"; 0 = off)',
    })
    .option('attribute-questions', {
      type: 'number',
      default: SFT_DEFAULTS.attributeQuestions,
      describe: 'Stream: probability of also asking each clip its colour, and its shape (0 = off)',
    })
    .option('attribute-clips', {
      choices: ['static', 'all'],
      default: SFT_DEFAULTS.attributeClips,
      describe: 'Stream: ask attribute questions about static clips only, or about every clip',
    })
    .option('vision-aux', {
      type: 'number',
      default: SFT_DEFAULTS.visionAux,
      describe:
        'Weight of the vision attribute loss: a head on the vision encoder learns what each clip shows from the questions asked about it (0 = off; docs/model.md, "Levers, fifth round")',
    })
    .option('categories', {
      type: 'string',
      default: SFT_DEFAULTS.categories.join(','),
      describe: 'Stream: categories of the training clips, cycled; one listed twice gets twice the clips',
    })
    .option('static-attributes', {
      type: 'string',
      default: SFT_DEFAULTS.staticAttributes.join(','),
      describe: 'Stream: what static clips ask about, cycled (colour, shape, count)',
    })
    .option('vision-stem', {
      type: 'number',
      describe: "Channels of the vision encoder's 3x3 convolutional stem (0 = none; default: crpo sft's model)",
    })
    .option('vision-stem-down', {
      type: 'number',
      describe:
        "Channels of the stem's second, stride-2 convolution (0 = none; default: crpo sft's model, or 0 with --vision-stem 0)",
    })
    .option('pos-init', {
      choices: ['random', 'sincos'],
      describe: "How the vision position tables start (default: crpo sft's model)",
    })
    .option('option-slots', {
      type: 'number',
      describe:
        "Option-slot embeddings: a learned vector per option line added to its tokens (0 = off; default: crpo sft's model)",
    })
    .option('target', {
      choices: ['letter', 'option-then-letter'],
      default: SFT_DEFAULTS.target,
      describe: 'Target completion: <answer>B</answer>, or the option text then <answer>B</answer>',
    })
    .option('seed', { type: 'number', default: SFT_DEFAULTS.seed })
    .option('shortcut-p', {
      type: 'number',
      default: SFT_DEFAULTS.shortcutP,
      describe: 'With --colour shortcut: probability that object colour names the answer',
    })
    .option('dynamic-answers', {
      choices: ['motion', 'colour'],
      default: SFT_DEFAULTS.dynamicAnswers,
      describe:
        "Stream: dynamic clips answered by what they show, or by the option their object's colour names (the biased base of the paper's starting point)",
    })
    .option('null-option', {
      type: 'boolean',
      default: SFT_DEFAULTS.nullOption,
      describe: 'Show "None of the above" as the last option',
    })
    .option('max-seconds', {
      type: 'number',
      default: SFT_DEFAULTS.maxSeconds,
      describe: 'Training time budget in seconds (0 = none); evaluation runs after it',
    })
    .option('save-every', { type: 'number', default: SFT_DEFAULTS.saveEvery, describe: 'Checkpoint every N steps' })
    .option('resume', { type: 'boolean', default: false, describe: 'Continue from <out>/checkpoint' })
    .option('quiet', { type: 'boolean', default: false, describe: 'No progress bar' })
    .option('nproc', {
      type: 'number',
      describe:
        "Train on N local processes, each on its share of every step's clips, gradients all-reduced (torchrun environment contract; docs/model.md)",
    })
    .example(
      'crpo sft --out runs/sft --nproc 2',
      'the capability check: a tiny model trained on fresh clips for 150 s on two processes, then held-out accuracy',
    );
}

interface Args {
  out: string;
  data: 'stream' | 'fixed';
  steps: number;
  members: 'both' | 'original';
  colour: 'independent' | 'shortcut';
  init: string;
  preset: PolicyPresetName;
  pairs: number;
  'test-pairs': number;
  epochs: number;
  'batch-size': number;
  lr: number;
  'weight-decay': number;
  'prompt-lm': number;
  reading: number;
  'attribute-questions': number;
  target: 'letter' | 'option-then-letter';
  'attribute-clips': 'static' | 'all';
  'vision-aux': number;
  categories: string;
  'static-attributes': string;
  'vision-stem'?: number;
  'vision-stem-down'?: number;
  'pos-init'?: 'random' | 'sincos';
  'option-slots'?: number;
  seed: number;
  'shortcut-p': number;
  'dynamic-answers': 'motion' | 'colour';
  'null-option': boolean;
  'max-seconds': number;
  'save-every': number;
  resume: boolean;
  quiet: boolean;
  nproc?: number;
}

function bar(p: SftProgress): string {
  const w = 30;
  const f = Math.round((w * p.step) / p.steps);
  const mmss = (s: number): string => `${Math.floor(s / 60)}:${String(Math.round(s % 60)).padStart(2, '0')}`;
  return `\r[${'#'.repeat(f)}${'.'.repeat(w - f)}] step ${p.step}/${p.steps} loss ${p.loss.toFixed(4)} ${mmss(p.elapsed)} ETA ${mmss(p.eta)} `;
}

const list = (s: string): string[] =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

const pct = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : (100 * v).toFixed(1));

export async function handler(a: Args): Promise<void> {
  if (await launchIfRequested(a.nproc)) return; // --nproc N: N workers run this command (lib/distributed/launch.ts)
  const dist = await initDistributed();
  const tty = process.stderr.isTTY && !a.quiet && dist.isMain;
  let lastLog = 0;
  if (dist.worldSize > 1 && dist.isMain)
    process.stderr.write(`crpo sft: ${dist.worldSize} ranks, ${a['batch-size']} clips per step in all\n`);
  const report = await runRank(dist, () =>
    runSft({
      dist,
      out: a.out,
      preset: a.preset,
      data: a.data,
      steps: a.steps,
      members: a.members,
      colour: a.colour,
      init: a.init,
      pairs: a.pairs,
      testPairs: a['test-pairs'],
      epochs: a.epochs,
      batchSize: a['batch-size'],
      lr: a.lr,
      weightDecay: a['weight-decay'],
      promptLm: a['prompt-lm'],
      reading: a.reading,
      attributeQuestions: a['attribute-questions'],
      target: a.target,
      attributeClips: a['attribute-clips'],
      visionAux: a['vision-aux'],
      categories: list(a.categories) as Category[],
      staticAttributes: list(a['static-attributes']) as StaticAttribute[],
      ...modelOptions(a['vision-stem'], a['vision-stem-down'], a['pos-init'], a['option-slots']),
      seed: a.seed,
      shortcutP: a['shortcut-p'],
      dynamicAnswers: a['dynamic-answers'],
      nullOption: a['null-option'],
      maxSeconds: a['max-seconds'],
      saveEvery: a['save-every'],
      resume: a.resume,
      onProgress: (p) => {
        if (a.quiet || !dist.isMain) return;
        if (tty) process.stderr.write(bar(p));
        else if (p.elapsed - lastLog >= 10 || p.step === p.steps) {
          lastLog = p.elapsed;
          process.stderr.write(bar(p).slice(1) + '\n');
        }
      },
    }),
  );
  if (!report) return; // rank 0 reports
  if (tty) process.stderr.write('\n');
  const g = report.metrics.groups;
  const lines = [
    `trained ${report.steps} steps in ${report.trainSeconds.toFixed(1)} s (final loss ${report.finalLoss.toFixed(4)}) on ${report.trainItems} clips`,
    `test (${report.testItems} clips): Acc ${pct(g.all?.acc)}  P-Acc ${pct(g.all?.p_acc)}  (chance Acc ${pct(report.chanceAcc)}, invalid ${pct(g.all?.invalid_rate)})`,
    ...Object.entries(g)
      .filter(([k]) => k !== 'all')
      .map(([k, m]) => `  ${k.padEnd(20)} Acc ${pct(m?.acc)}  P-Acc ${pct(m?.p_acc)}  n=${m?.n_samples}`),
    ...Object.entries(report.staticAttributes).map(([k, v]) => `    static/${k.padEnd(13)} Acc ${pct(v)}`),
    `colour-shortcut answers on dynamic clips whose colour names a wrong option: ${pct(report.colourShortcut)}%`,
    `checkpoint: ${report.checkpoint}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

/**
 * The model fields of --vision-stem / --vision-stem-down / --pos-init / --option-slots; no stem
 * means no stride-2 convolution after it.
 */
function modelOptions(
  stem: number | undefined,
  down: number | undefined,
  posInit: 'random' | 'sincos' | undefined,
  optionSlots: number | undefined,
): Partial<Pick<SftOptions, 'model'>> {
  const model: NonNullable<SftOptions['model']> = {};
  if (optionSlots !== undefined) model.optionSlots = optionSlots;
  if (posInit !== undefined) model.posInit = posInit;
  if (stem !== undefined) model.visionStem = stem;
  if (down !== undefined) model.visionStemDown = down;
  else if (stem === 0) model.visionStemDown = 0;
  return Object.keys(model).length > 0 ? { model } : {};
}
