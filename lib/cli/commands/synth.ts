/**
 * `crpo synth`: writes a synthetic DyBench split (lib/synth; crpo-method.md section 8) as JSONL
 * plus PNG frame folders, or JSONL only with inline specs (`--no-frames`).
 */
import type { Argv } from 'yargs';
import { CATEGORIES, type Category } from '../../data/schema';
import { invalidArg } from '../../errors';
import { SYNTH_DEFAULTS } from '../../synth';
import { writeSynthetic } from '../../synth/writer';

export function builder(y: Argv): Argv {
  return y
    .option('out', { type: 'string', demandOption: true, describe: 'Output folder' })
    .option('split', { choices: ['train', 'test', 'both'], default: 'train', describe: 'Split to write (both: train.jsonl and test.jsonl)' })
    .option('pairs', { type: 'number', default: 50, describe: 'Pairs per category' })
    .option('seed', { type: 'number', default: 1, describe: 'Random seed (same seed, same data)' })
    .option('num-frames', { type: 'number', default: SYNTH_DEFAULTS.frames, describe: 'Frames per clip' })
    .option('size', { type: 'number', default: SYNTH_DEFAULTS.size, describe: 'Frame height and width in pixels' })
    .option('shortcut-p', { type: 'number', default: SYNTH_DEFAULTS.shortcutP, describe: 'Train split: probability that object colour names the dynamic answer' })
    .option('categories', { type: 'string', default: SYNTH_DEFAULTS.categories.join(','), describe: 'Comma-separated categories' })
    .option('frames', { type: 'boolean', default: true, describe: 'Write PNG frame folders (--no-frames: JSONL with inline specs only)' })
    .option('format', { choices: ['png', 'jpg'], default: 'png', describe: 'Frame image format' })
    .option('sheet', { type: 'boolean', default: true, describe: 'Write <split>-sheet.png: the first pairs of each category, original | partner' })
    .example('crpo synth --out synth --split both --pairs 50 --seed 1', 'train.jsonl + test.jsonl and PNG frames in synth/');
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

export async function handler(argv: Args): Promise<void> {
  const categories = argv.categories.split(',').map((s) => s.trim()).filter(Boolean) as Category[];
  for (const c of categories) if (!CATEGORIES.includes(c)) throw invalidArg('--categories', `a comma-separated list of ${CATEGORIES.filter((x) => x !== 'other').join(', ')}`, c, 'crpo synth');
  const splits: ('train' | 'test')[] = argv.split === 'both' ? ['train', 'test'] : [argv.split];
  for (const split of splits) {
    const r = await writeSynthetic({
      out: argv.out, split, pairs: argv.pairs, seed: argv.seed, frames: argv['num-frames'], size: argv.size,
      shortcutP: argv['shortcut-p'], categories, writeFrames: argv.frames, format: argv.format, sheet: argv.sheet,
    });
    const frames = argv.frames ? `, frame folders: ${r.framesWritten} written, ${r.framesSkipped} already present` : ', inline specs (no frames)';
    process.stdout.write(`${split}: ${r.pairs} pairs, ${r.records} records -> ${r.jsonl}${frames}${r.sheet ? `; contact sheet ${r.sheet}` : ''}\n`);
  }
}
