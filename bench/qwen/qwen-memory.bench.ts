/**
 * Peak resident memory of the Qwen forward + backward at the 25 M size of issue 18 (LM 4 x 512,
 * vision 4 x 256, fp32; 4 rows of one prompt: 64 visual + 66 text tokens, 32 completion tokens),
 * every weight trained, under glibc's defaults (CRPO_MALLOC=default) and under the training malloc
 * settings (lib/cli/relaunch.ts). Each call runs twice in a fresh process; the process's peak RSS
 * (getrusage) is reported above the RSS after loading, to show where memory goes:
 * - `forward({ grads })`: the per-row objective over all positions, every gradient and the full
 *   logits copied into JS (what issue 18 measured: 1,642 MiB vs transformers' 1,073 under defaults);
 * - `trainStep({ apply: false })`: the GRPO loss on the completion tokens, gradients kept native;
 * - the same with the shared prefix; and the applying train step (AdamW state), per-row and shared;
 * - transformers' Qwen2_5_VLForConditionalGeneration on the same folder and rows (qwen_hf_memory.py:
 *   eager attention, the mean cross-entropy of the completion tokens, backward into every weight),
 *   run by the Python that CRPO_HF_PYTHON names (one with torch and transformers); without it the row
 *   is left out and the reason printed.
 */
import { spawnSync, type SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QwenVLModel, type QwenInputs } from '../../lib/hf/model';
import { relaunchEnv } from '../../lib/cli/relaunch';
import { describeMachine, fmt, machine, table, writeResults } from '../harness';
import { SIZES, groupRows, writeRandomFolder } from './random-qwen';

const ROWS = 4;
const VARIANTS = ['forward-grads', 'grads-rows', 'grads-shared', 'step-rows', 'step-shared'] as const;
type Variant = (typeof VARIANTS)[number];
const LABEL: Record<Variant, string> = {
  'forward-grads': 'forward({ grads: all }), per-row (copies grads + logits into JS)',
  'grads-rows': 'trainStep({ apply: false }), per-row (grads stay native)',
  'grads-shared': 'trainStep({ apply: false }), shared prefix',
  'step-rows': 'trainStep (AdamW), per-row',
  'step-shared': 'trainStep (AdamW), shared prefix',
};
const size = SIZES[0];
const HF_LABEL = 'transformers: model(**rows, labels).loss.backward() (each row encodes its video)';

/** Why the transformers row cannot run, or undefined when CRPO_HF_PYTHON imports transformers. */
function hfSkipReason(): string | undefined {
  const py = process.env.CRPO_HF_PYTHON;
  if (!py) return 'CRPO_HF_PYTHON is not set (a Python with torch >= 2.2 and transformers)';
  const r = spawnSync(py, ['-c', 'from transformers import Qwen2_5_VLForConditionalGeneration'], { encoding: 'utf8' });
  if (r.status !== 0)
    return `${py} cannot import Qwen2_5_VLForConditionalGeneration: ${(r.stderr || String(r.error)).trim().split('\n').pop()}`;
  return undefined;
}

/** The rows of the crpo children as transformers' inputs: a JSON file and the pixel rows (fp32). */
function writeHfInputs(dir: string): [string, string] {
  const { inputs, prefix } = groupRows(size, ROWS, 7);
  const spec = {
    input_ids: inputs.inputIds,
    attention_mask: inputs.attentionMask,
    video_grid_thw: inputs.videoGridThw,
    second_per_grid_ts: inputs.secondPerGridTs,
    repeats: inputs.videoRepeats,
    completion_start: prefix,
  };
  const [json, bin] = [path.join(dir, 'hf-inputs.json'), path.join(dir, 'hf-pixels.f32')];
  fs.writeFileSync(json, JSON.stringify(spec));
  const px = inputs.pixelValuesVideos!;
  fs.writeFileSync(bin, Buffer.from(px.buffer, px.byteOffset, px.byteLength));
  return [json, bin];
}

async function child(variant: Variant, folder: string): Promise<void> {
  const m = await QwenVLModel.load(folder);
  const names = m.setTrainable('all');
  const { inputs, prefix, L } = groupRows(size, ROWS, 7);
  const loadMiB = process.resourceUsage().maxRSS / 1024;
  const shared: QwenInputs = { ...inputs, prefixGroups: [{ rows: ROWS, prefixLength: prefix }] };
  const completionMask = new Int32Array(ROWS * L);
  for (let b = 0; b < ROWS; b++) for (let j = prefix; j < L; j++) completionMask[b * L + j] = 1;
  const step = { completionMask, advantages: Float32Array.of(1, -1, 0.5, -0.5), lr: 1e-5 };
  for (let i = 0; i < 2; i++) {
    if (variant === 'forward-grads') await m.forward(inputs, { grads: names });
    else if (variant === 'grads-rows') await m.trainStep(inputs, { ...step, apply: false });
    else if (variant === 'grads-shared') await m.trainStep(shared, { ...step, apply: false });
    else if (variant === 'step-rows') await m.trainStep(inputs, step);
    else await m.trainStep(shared, step);
  }
  const peakMiB = process.resourceUsage().maxRSS / 1024;
  process.stdout.write(JSON.stringify({ loadMiB, peakMiB, weights: names.length }) + '\n');
  m.dispose();
}

function main(): void {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-bench-mem-'));
  const json: Record<string, unknown> = { machine: machine() };
  const rows: (string | number)[][] = [];
  try {
    const folder = path.join(tmp, size.name);
    const params = writeRandomFolder(size, folder);
    const base: NodeJS.ProcessEnv = { ...process.env };
    for (const k of ['MALLOC_ARENA_MAX', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'CRPO_MALLOC_RELAUNCHED'])
      delete base[k];
    delete base.CRPO_MALLOC;
    const settings: [string, NodeJS.ProcessEnv][] = [
      ['glibc defaults', { ...base, CRPO_MALLOC: 'default' }],
      ['training malloc', relaunchEnv(base)],
    ];
    const skipHf = hfSkipReason();
    if (skipHf) console.error(`transformers row skipped: ${skipHf}`);
    const hfFiles = skipHf ? [] : writeHfInputs(tmp);
    for (const v of [...VARIANTS, ...(skipHf ? [] : ['transformers' as const])]) {
      const row: (string | number)[] = [v === 'transformers' ? HF_LABEL : LABEL[v]];
      for (const [name, env] of settings) {
        const r: SpawnSyncReturns<string> =
          v === 'transformers'
            ? spawnSync(process.env.CRPO_HF_PYTHON!, [path.join(__dirname, 'qwen_hf_memory.py'), folder, ...hfFiles], {
                env: { ...env, OMP_NUM_THREADS: String(os.cpus().length) },
                encoding: 'utf8',
              })
            : spawnSync(
                process.execPath,
                ['-r', path.join(__dirname, '..', '..', 'scripts', 'ts-register.js'), __filename, '--child', v, folder],
                { env, encoding: 'utf8' },
              );
        if (r.status !== 0) throw new Error(`${v} (${name}) failed: ${r.stderr}`);
        const o = JSON.parse(r.stdout.trim().split('\n').pop()!) as { loadMiB: number; peakMiB: number };
        if (v === 'transformers') json.transformers = o;
        json[`${v} / ${name}`] = o;
        row.push(`${fmt(o.peakMiB, 0)} (+${fmt(o.peakMiB - o.loadMiB, 0)})`);
        console.error(`${v} / ${name}: peak ${o.peakMiB.toFixed(0)} MiB, after load ${o.loadMiB.toFixed(0)} MiB`);
      }
      rows.push(row);
    }
    json.parameters = params;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const md = [
    '### Qwen-VL forward + backward memory (`bench/qwen/qwen-memory.bench.ts`, CPU, fp32)',
    '',
    'Reproduce: `npm run bench -- qwen` (one fresh process per call and allocator setting).',
    '',
    `Machine: ${describeMachine(json.machine as Record<string, unknown>)}.`,
    `${((json.parameters as number) / 1e6).toFixed(1)} M-parameter Qwen2.5-VL (LM 4 x 512, vision 4 x 256, ` +
      `vocabulary 8192), every weight trained, ${ROWS} rows of one prompt (64 visual + 66 text + 32 completion tokens);`,
    'each call twice in a fresh process. Peak RSS in MiB (in brackets: above the RSS after loading the model).',
    json.transformers
      ? `transformers row: transformers ${(json.transformers as { transformers: string }).transformers}, torch ` +
        `${(json.transformers as { torch: string }).torch} (CPU wheel), eager attention, the same threads and MALLOC_* settings; ` +
        'reproduce with CRPO_HF_PYTHON=<python with torch and transformers> npm run bench -- qwen.'
      : 'transformers row: not run (CRPO_HF_PYTHON unset or without transformers).',
    '',
    table(['call', 'glibc defaults', 'training malloc settings'], rows),
  ].join('\n');
  writeResults('qwen-memory', json, md);
}

if (process.argv[2] === '--child') {
  child(process.argv[3] as Variant, process.argv[4]).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  main();
}
