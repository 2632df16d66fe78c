/**
 * `crpo synth`: writes a synthetic DyBench split (lib/synth; crpo-method.md section 8) as JSONL
 * plus PNG frame folders, or JSONL only with inline specs (`--no-frames`).
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Argv } from 'yargs';
import { CATEGORIES, type Category } from '../../data/schema';
import { CrpoError, invalidArg } from '../../errors';
import { SYNTH_DEFAULTS } from '../../synth';
import { writeSynthetic } from '../../synth/writer';

export function builder(y: Argv): Argv {
  return y
    .option('out', { type: 'string', demandOption: true, describe: 'Output folder' })
    .option('split', {
      choices: ['train', 'test', 'both'],
      default: 'train',
      describe: 'Split to write (both: train.jsonl and test.jsonl)',
    })
    .option('pairs', { type: 'number', default: 50, describe: 'Pairs per category (>= 1)' })
    .option('seed', { type: 'number', default: 1, describe: 'Random seed (same seed, same data)' })
    .option('num-frames', {
      type: 'number',
      default: SYNTH_DEFAULTS.frames,
      describe: 'Frames per clip, 2-1024 (a ' + 'count; --frames is the switch for writing frame folders)',
    })
    .option('size', { type: 'number', default: SYNTH_DEFAULTS.size, describe: 'Frame height and width in pixels' })
    .option('shortcut-p', {
      type: 'number',
      default: SYNTH_DEFAULTS.shortcutP,
      describe: 'Train split: probability that object colour names the dynamic answer',
    })
    .option('categories', {
      type: 'string',
      default: SYNTH_DEFAULTS.categories.join(','),
      describe: 'Comma-separated categories',
    })
    .option('frames', {
      type: 'boolean',
      default: true,
      describe: 'Write PNG frame folders (--no-frames: JSONL with inline specs only)',
    })
    .option('format', { choices: ['png', 'jpg'], default: 'png', describe: 'Frame image format' })
    .option('sheet', {
      type: 'boolean',
      default: true,
      describe: 'Write <split>-sheet.png: the first pairs of each category, original | partner',
    })
    .example(
      'crpo synth --out synth --split both --pairs 50 --seed 1',
      'train.jsonl + test.jsonl and PNG frames in synth/',
    );
}

interface Args {
  out: string;
  split: 'train' | 'test' | 'both';
  pairs: number;
  seed: number;
  'num-frames': number;
  size: number;
  'shortcut-p': number;
  categories: string;
  frames: boolean;
  format: 'png' | 'jpg';
  sheet: boolean;
}

/** Most records one run writes: the records of a split are held in memory until its JSONL is written. */
export const MAX_SYNTH_RECORDS = 2_000_000;

/**
 * Checks the flags and what the run would write against this machine before any work: --out must
 * be a folder, --pairs at least 1, the records few enough to hold in memory and the frames (PNG,
 * at most raw size / 4 on these clips) small enough for the free disk space.
 */
function checkPlan(argv: Args, categories: number, splits: number): void {
  const bad = (flag: string, want: string, got: unknown): CrpoError =>
    new CrpoError('ERR_CRPO_INVALID_ARG', `--${flag} ${String(got)}: expected ${want}`);
  if (fs.existsSync(argv.out) && !fs.statSync(argv.out).isDirectory()) {
    throw new CrpoError(
      'ERR_CRPO_BAD_PATH',
      `--out ${argv.out}: is a file; --out names the folder that gets ` +
        `<split>.jsonl and frames/ (e.g. --out ${path.dirname(argv.out) === '.' ? 'synth' : path.dirname(argv.out)})`,
    );
  }
  if (!Number.isInteger(argv.pairs) || argv.pairs < 1) {
    throw bad('pairs', 'an integer >= 1 (pairs per category)', argv.pairs);
  }
  if (!Number.isInteger(argv.seed)) throw bad('seed', 'an integer', argv.seed);
  if (!Number.isInteger(argv['num-frames']) || argv['num-frames'] < 2 || argv['num-frames'] > 1024) {
    throw bad('num-frames', 'an integer in [2, 1024] (frames per clip)', argv['num-frames']);
  }
  if (!Number.isInteger(argv.size) || argv.size < 8 || argv.size > 1024) {
    throw bad('size', 'an integer in [8, 1024] (pixels)', argv.size);
  }
  if (!(argv['shortcut-p'] >= 0 && argv['shortcut-p'] <= 1)) {
    throw bad('shortcut-p', 'a probability in [0, 1]', argv['shortcut-p']);
  }
  const records = argv.pairs * categories * 2 * splits;
  if (records > MAX_SYNTH_RECORDS) {
    throw new CrpoError(
      'ERR_CRPO_TOO_LARGE',
      `--pairs ${argv.pairs} x ${categories} categories x 2 members x ` +
        `${splits} split(s) = ${records} records, more than the ${MAX_SYNTH_RECORDS} one run writes; lower --pairs`,
    );
  }
  if (!argv.frames) return;
  const bytes = (records * argv['num-frames'] * argv.size * argv.size * 3) / 4;
  let free = Infinity;
  try {
    let dir = path.resolve(argv.out);
    while (!fs.existsSync(dir)) dir = path.dirname(dir);
    const st = fs.statfsSync(dir);
    free = st.bavail * st.bsize;
  } catch {
    /* no statfs here: not checked */
  }
  if (bytes > free) {
    const gb = (b: number) => `${(b / 1e9).toFixed(1)} GB`;
    throw new CrpoError(
      'ERR_CRPO_TOO_LARGE',
      `--pairs ${argv.pairs} with --num-frames ${argv['num-frames']} of ` +
        `${argv.size}x${argv.size} would write about ${gb(bytes)} of frames, more than the ${gb(free)} free under ` +
        `${argv.out}; lower --pairs, or --no-frames for inline specs`,
    );
  }
}

export async function handler(argv: Args): Promise<void> {
  const categories = argv.categories
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean) as Category[];
  if (categories.length === 0) {
    throw invalidArg(
      '--categories',
      `a comma-separated list of ${CATEGORIES.filter((x) => x !== 'other').join(', ')}`,
      argv.categories,
      'crpo synth',
    );
  }
  for (const c of categories)
    if (!CATEGORIES.includes(c) || c === 'other')
      throw invalidArg(
        '--categories',
        `a comma-separated list of ${CATEGORIES.filter((x) => x !== 'other').join(', ')}`,
        c,
        'crpo synth',
      );
  const splits: ('train' | 'test')[] = argv.split === 'both' ? ['train', 'test'] : [argv.split];
  checkPlan(argv, categories.length, splits.length);
  for (const split of splits) {
    const r = await writeSynthetic({
      out: argv.out,
      split,
      pairs: argv.pairs,
      seed: argv.seed,
      frames: argv['num-frames'],
      size: argv.size,
      shortcutP: argv['shortcut-p'],
      categories,
      writeFrames: argv.frames,
      format: argv.format,
      sheet: argv.sheet,
    });
    const frames = argv.frames
      ? `, frame folders: ${r.framesWritten} written, ${r.framesSkipped} already present`
      : ', inline specs (no frames)';
    process.stdout.write(
      `${split}: ${r.pairs} pairs, ${r.records} records -> ${r.jsonl}${frames}${r.sheet ? `; contact sheet ${r.sheet}` : ''}\n`,
    );
  }
}
