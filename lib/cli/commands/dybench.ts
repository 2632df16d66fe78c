/**
 * `crpo dybench build|import|validate`: make paired counterfactual data from your clips
 * (lib/dybench/builder), import the released DyBench configs or TimeBlind-style instances with a
 * field mapping (lib/dybench/importers), and check a DyBench JSONL (lib/data/loader).
 */
import * as path from 'path';
import type { Argv } from 'yargs';
import { CrpoError } from '../../errors';
import { writeJsonlAtomic } from '../../data/jsonl';
import { formatIssue, loadRecords } from '../../data/loader';
import { VIDEO_TRANSFORMS } from '../../counterfactual/transforms';
import { CATEGORIES, type Category, type RecordTransform } from '../../data/schema';
import { buildDyBench } from '../../dybench/builder';
import {
  DYBENCH_FIELDS,
  TIMEBLIND_FIELDS,
  importDyBench,
  importTimeBlind,
  parseFieldFlags,
  type ImportResult,
} from '../../dybench/importers';
import { reportError } from '../main';

type Handler<A> = (argv: A) => Promise<void>;

/** Nested commands report their own errors the way main() does. */
function guarded<A>(h: Handler<A>): Handler<A> {
  return async (argv) => {
    try {
      await h(argv);
    } catch (err) {
      process.exitCode = reportError(err);
    }
  };
}

interface BuildArgs {
  annotations: string;
  out: string;
  jsonl?: string;
  format: 'mp4' | 'frames';
  'moving-transform': 'auto' | 'hflip' | 'reverse' | 'hflip+reverse';
  'static-transform': 'reverse' | 'hflip';
  frames?: number;
  'max-pixels'?: number;
  crf: number;
  fps: number;
  concurrency: number;
}

interface ImportArgs {
  kind: 'dybench' | 'timeblind';
  input: string[];
  out: string;
  field?: string[];
  'list-key'?: string;
  'video-root'?: string;
  'answer-base': number;
  'pair-by': 'auto' | 'field' | 'partner' | 'consecutive';
  'partner-transform'?: string;
  category?: string;
  source?: string;
  lenient: boolean;
}

interface ValidateArgs {
  file: string;
  lenient: boolean;
  'check-files': boolean;
  'video-root'?: string;
}

export function builder(y: Argv): Argv {
  return y
    .command<BuildArgs>(
      'build',
      'Make counterfactual partners of your annotated clips and write the paired JSONL',
      (b) =>
        b
          .option('annotations', {
            type: 'string',
            demandOption: true,
            describe: 'Annotations: JSONL or JSON array (docs/data-format.md)',
          })
          .option('out', { type: 'string', demandOption: true, describe: 'Output folder' })
          .option('jsonl', { type: 'string', describe: 'Output JSONL (default <out>/dybench.jsonl)' })
          .option('format', {
            choices: ['mp4', 'frames'],
            default: 'mp4',
            describe: 'mp4 (libx264) or PNG frame folders (lossless)',
          })
          .option('moving-transform', {
            choices: ['auto', 'hflip', 'reverse', 'hflip+reverse'],
            default: 'auto',
            describe: 'Moving-direction partner: auto = hflip for left/right, else reverse',
          })
          .option('static-transform', {
            choices: ['reverse', 'hflip'],
            default: 'reverse',
            describe: 'Static-question partner',
          })
          .option('frames', { type: 'number', describe: 'Sample this many frames uniformly (default: all)' })
          .option('max-pixels', { type: 'number', describe: 'Pixel budget per frame (default: keep size)' })
          .option('crf', { type: 'number', default: 18, describe: 'libx264 CRF, 0-51 (0 = lossless)' })
          .option('fps', {
            type: 'number',
            default: 8,
            describe: 'Frame rate for frame-folder clips, frames per second',
          })
          .option('concurrency', {
            type: 'number',
            default: 2,
            describe: 'Clips processed at once',
          }) as unknown as Argv<BuildArgs>,
      guarded<BuildArgs>(async (a) => {
        const int = (flag: string, v: number | undefined, lo: number, hi: number, unit: string): void => {
          if (v !== undefined && !(Number.isInteger(v) && v >= lo && v <= hi)) {
            throw new CrpoError(
              'ERR_CRPO_INVALID_ARG',
              `--${flag} ${v}: expected an integer in [${lo}, ${hi}] ` + `(${unit})`,
            );
          }
        };
        int('crf', a.crf, 0, 51, 'libx264 quality: 0 lossless, 18 visually lossless, 51 worst');
        int('frames', a.frames, 1, 4096, 'frames per clip');
        int('max-pixels', a['max-pixels'], 64, 8192 * 8192, 'pixels per frame');
        int('concurrency', a.concurrency, 1, 64, 'clips at once');
        if (!(Number.isFinite(a.fps) && a.fps > 0 && a.fps <= 240)) {
          throw new CrpoError(
            'ERR_CRPO_INVALID_ARG',
            `--fps ${a.fps}: expected a frame rate in (0, 240] (frames ` + `per second)`,
          );
        }
        const r = await buildDyBench({
          annotations: a.annotations,
          out: a.out,
          jsonl: a.jsonl,
          format: a.format,
          movingTransform: a['moving-transform'],
          staticTransform: a['static-transform'],
          frames: a.frames,
          maxPixels: a['max-pixels'],
          crf: a.crf,
          fps: a.fps,
          concurrency: a.concurrency,
        });
        process.stdout.write(`${r.pairs} pairs (${r.built} built, ${r.skipped} already present) -> ${r.jsonl}\n`);
      }),
    )
    .command<ImportArgs>(
      'import <kind> <input..>',
      'Convert released DyBench configs or TimeBlind-style instances to DyBench JSONL',
      (b) =>
        b
          .positional('kind', { choices: ['dybench', 'timeblind'], describe: 'Input kind' })
          .positional('input', {
            type: 'string',
            array: true,
            describe: 'JSON or JSONL files (DyBench: one per config)',
          })
          .option('out', { type: 'string', demandOption: true, describe: 'Output JSONL' })
          .option('field', {
            type: 'string',
            array: true,
            describe: `Field mapping name=path (dotted). DyBench: ${DYBENCH_FIELDS.join(', ')}; TimeBlind: ${TIMEBLIND_FIELDS.join(', ')}`,
          })
          .option('list-key', { type: 'string', describe: 'Path of the entry list inside a JSON object' })
          .option('video-root', {
            type: 'string',
            describe: 'Folder that relative video paths start from (default: the input file folder)',
          })
          .option('answer-base', { choices: [0, 1], default: 0, describe: 'Numeric answers count from 0 or 1' })
          .option('pair-by', {
            choices: ['auto', 'field', 'partner', 'consecutive'],
            default: 'auto',
            describe: 'DyBench pairs: pair id field, partner video field, or consecutive entries',
          })
          .option('partner-transform', {
            choices: [...VIDEO_TRANSFORMS],
            describe: 'Transform of the partner member when the data does not say',
          })
          .option('category', {
            choices: CATEGORIES,
            describe: 'Category of every entry (default: a category field or the config file name)',
          })
          .option('source', { type: 'string', describe: 'source of every record' })
          .option('lenient', {
            type: 'boolean',
            default: false,
            describe: 'Skip bad entries (and report them) instead of failing',
          }) as unknown as Argv<ImportArgs>,
      guarded<ImportArgs>(async (a) => {
        const known = a.kind === 'dybench' ? DYBENCH_FIELDS : TIMEBLIND_FIELDS;
        const fields = parseFieldFlags(a.field, known);
        const all = [];
        for (const input of a.input) {
          const common = {
            input,
            fields,
            listKey: a['list-key'],
            videoRoot: a['video-root'],
            answerBase: a['answer-base'] as 0 | 1,
            category: a.category as Category | undefined,
            source: a.source,
            mode: a.lenient ? ('lenient' as const) : ('strict' as const),
          };
          const r: ImportResult =
            a.kind === 'dybench'
              ? importDyBench({
                  ...common,
                  pairBy: a['pair-by'],
                  partnerTransform: a['partner-transform'] as RecordTransform | undefined,
                })
              : importTimeBlind(common);
          const map = Object.entries(r.mapping)
            .map(([k, v]) => `${k}=${v ?? '-'}`)
            .join(' ');
          process.stdout.write(
            `${path.basename(input)}: ${r.records.length} records${r.skipped ? `, ${r.skipped} entries skipped` : ''}; field mapping: ${map}\n`,
          );
          for (const i of r.issues.slice(0, 20)) process.stdout.write(`  ${formatIssue(i)}\n`);
          if (r.issues.length > 20) process.stdout.write(`  ... and ${r.issues.length - 20} more\n`);
          all.push(...r.records);
        }
        if (all.length === 0) {
          throw new CrpoError(
            'ERR_CRPO_EMPTY',
            `no records imported from ` +
              `${a.input.join(', ')}${a.lenient ? ' (every entry was skipped)' : ''}; nothing written to ${a.out}`,
          );
        }
        await writeJsonlAtomic(a.out, all);
        process.stdout.write(`${all.length} records -> ${a.out}\n`);
      }),
    )
    .command<ValidateArgs>(
      'validate <file>',
      'Check a DyBench JSONL: schema, option counts, answers, ids, pairs (and files)',
      (b) =>
        b
          .positional('file', { type: 'string', describe: 'DyBench JSONL' })
          .option('lenient', {
            type: 'boolean',
            default: false,
            describe: 'Report and count bad records instead of failing',
          })
          .option('check-files', {
            type: 'boolean',
            default: false,
            describe: 'Also check that video files and folders exist',
          })
          .option('video-root', {
            type: 'string',
            describe: 'Folder that relative video paths start from (default: the file folder)',
          }) as unknown as Argv<ValidateArgs>,
      guarded<ValidateArgs>(async (a) => {
        const r = await loadRecords(a.file, {
          mode: a.lenient ? 'lenient' : 'strict',
          checkFiles: a['check-files'],
          videoRoot: a['video-root'],
        });
        const pairs = new Set(r.records.map((x) => x.pair_id)).size;
        const byCat = new Map<string, number>();
        for (const x of r.records) byCat.set(x.category, (byCat.get(x.category) ?? 0) + 1);
        process.stdout.write(
          `${a.file}: ${r.records.length} records, ${pairs} pairs (${[...byCat].map(([c, n]) => `${c} ${n}`).join(', ')})${r.skipped ? `; ${r.skipped} skipped` : ''}\n`,
        );
        for (const i of r.issues) process.stdout.write(`  ${formatIssue(i)}\n`);
        if (r.skipped) {
          throw new CrpoError(
            'ERR_CRPO_BAD_DATA',
            `${a.file}: ${r.skipped} record(s) skipped (listed above); fix ` +
              `them, or load the file with --lenient where a command offers it`,
          );
        }
      }),
    )
    .demandCommand(1, 'Name a dybench command: build, import or validate.');
}

export function handler(): void {
  /* the nested commands do the work */
}
