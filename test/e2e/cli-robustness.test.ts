/**
 * The CLI as a new user meets it, on bad or unusual input, table-driven (issue 16): every case
 * runs `crpo <args>` in this process (lib/cli/main.ts run, stdout and stderr captured) and checks
 * the exit code, that stderr names the input (file:line:field, flag, or path) and says what to do,
 * that there is no stack and no "unexpected error", and, where the command writes, that nothing
 * half-written is left. Cases cover every command: missing / empty / blank / truncated / wrong-type
 * / out-of-range / huge / non-UTF-8 inputs, corrupt checkpoints and run state, locked run folders,
 * bad flags, busy ports. Server cases go over HTTP to 127.0.0.1 (bounded request counts):
 * malformed, oversized and wrongly shaped requests, out-of-range generation settings, disconnects
 * and a burst; the server still answers correctly after them.
 */
import * as fs from 'fs';
import * as http from 'http';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { run } from '../../lib/cli/main';
import { startServer, type RunningServer } from '../../lib/serve';
import { synthesize } from '../../lib/synth';
import { resolveConfig } from '../../lib/train/config';
import { sftBase } from '../../lib/train/base-model';
import { formatPrompt } from '../../lib/prompt';
import { installedTorchVersion, torchrunLine } from '../../lib/cli/commands/dist';
import { trainingPromptOf } from '../../lib/policy/checkpoint-folder';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-robust-'));
const P = (...p: string[]) => path.join(tmp, ...p);

interface Result {
  code: number;
  out: string;
  err: string;
}

/** `crpo <args>` in this process; stdout / stderr captured. */
async function cli(args: string[]): Promise<Result> {
  const o = process.stdout.write.bind(process.stdout),
    e = process.stderr.write.bind(process.stderr);
  let out = '',
    err = '';
  const grab =
    (add: (s: string) => void) =>
    (chunk: unknown, ...rest: unknown[]): boolean => {
      add(String(chunk));
      const cb = rest.find((x) => typeof x === 'function') as (() => void) | undefined;
      cb?.();
      return true;
    };
  process.stdout.write = grab((s) => {
    out += s;
  }) as typeof process.stdout.write;
  process.stderr.write = grab((s) => {
    err += s;
  }) as typeof process.stderr.write;
  try {
    const code = await run(args);
    return { code, out, err };
  } finally {
    process.stdout.write = o;
    process.stderr.write = e;
  }
}

// ---- fixtures ----------------------------------------------------------------------------------
const records = synthesize({ split: 'test', pairs: 1, seed: 1 }).map((x) => x.record);
const good = records.map((r) => JSON.stringify(r)).join('\n') + '\n';
const write = (name: string, text: string | Buffer): string => {
  fs.mkdirSync(path.dirname(P(name)), { recursive: true });
  fs.writeFileSync(P(name), text);
  return P(name);
};
const withLine2 = (f: (r: Record<string, unknown>) => unknown): string =>
  records
    .map((r, i) => (i === 1 ? JSON.stringify(f({ ...r } as Record<string, unknown>)) : JSON.stringify(r)))
    .join('\n') + '\n';

const linearCkpt = P('linear-ckpt');
const runDir = P('run');
let busyPort = 0;
let busy: net.Server;

beforeAll(async () => {
  write('good.jsonl', good);
  write('empty.jsonl', '');
  write('blank.jsonl', '\n   \n\n');
  write(
    'latin1.jsonl',
    Buffer.concat([
      Buffer.from(good.split('\n')[0] + '\n'),
      Buffer.from('{"id": "caf'),
      Buffer.from([0xe9]),
      Buffer.from('"}\n'),
    ]),
  );
  write('truncated.jsonl', good.slice(0, good.length - 40));
  write('array-line.jsonl', good + '[1, 2, 3]\n');
  write(
    'wrong-type.jsonl',
    withLine2((r) => ({ ...r, answer: 'B' })),
  );
  write(
    'bad-answer.jsonl',
    withLine2((r) => ({ ...r, answer: 17 })),
  );
  write(
    'huge-scene.jsonl',
    withLine2((r) => ({ ...r, video: { ...(r.video as object), frames: 100000, height: 4000, width: 4000 } })),
  );
  write('nulls.jsonl', 'null\n');
  write('config-empty.yaml', '');
  write('config-bad.yaml', 'steps: [1, 2\n');
  write('config-list.yaml', '- 1\n- 2\n');
  write('config-unknown.yaml', 'stepz: 3\n');
  write('config-wrongtype.yaml', 'lr: many\n');
  write('config-missing-data.yaml', 'data:\n  train: nowhere.jsonl\n');
  write(
    'sub/config-rel.yaml',
    'data:\n  train: ../good.jsonl\n  val: ""\nsteps: 1\nbatchSize: 2\ngroupSize: 2\nplots: false\nprogress: false\nout: ' +
      P('rel-run') +
      '\n',
  );
  fs.mkdirSync(P('emptydir'));
  // A frames folder whose frames differ in size, referenced by a record pair.
  const png = (w: number, h: number) =>
    sharp({ create: { width: w, height: h, channels: 3, background: { r: 9, g: 90, b: 200 } } })
      .png()
      .toBuffer();
  fs.mkdirSync(P('mixed', 'a'), { recursive: true });
  fs.mkdirSync(P('mixed', 'b'), { recursive: true });
  for (let t = 0; t < 4; t++) {
    fs.writeFileSync(P('mixed', 'a', `frame_${t}.png`), await png(t === 2 ? 48 : 32, 32));
    fs.writeFileSync(P('mixed', 'b', `frame_${t}.png`), await png(32, 32));
  }
  const [r0, r1] = records;
  write(
    'mixed.jsonl',
    [
      { ...r0, video: 'mixed/a' },
      { ...r1, video: 'mixed/b' },
    ]
      .map((r) => JSON.stringify(r))
      .join('\n') + '\n',
  );
  // A linear checkpoint (fast to make and load) and a short training run to damage.
  await sftBase(resolveConfig({ overrides: { data: { pairs: 3, val: '' } } }), {
    steps: 2,
    batchSize: 4,
    lr: 0.05,
    nullOption: true,
    out: linearCkpt,
  });
  const r = await cli([
    'train',
    '--steps',
    '2',
    '--batch-size',
    '2',
    '--group-size',
    '2',
    '--out',
    runDir,
    '--val-every',
    '0',
    '--set',
    'data.pairs=2',
    '--set',
    'data.valPairs=1',
    '--set',
    'plots=false',
    '--set',
    'progress=false',
  ]);
  if (r.code !== 0) throw new Error(`fixture run failed: ${r.err}`);
  busy = net.createServer();
  await new Promise<void>((res) => busy.listen(0, '127.0.0.1', () => res()));
  busyPort = (busy.address() as net.AddressInfo).port;
}, 120_000);

afterAll(async () => {
  await new Promise<void>((res) => busy.close(() => res()));
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A copy of the training run with its newest checkpoint changed by `damage`. */
function damagedRun(name: string, damage: (ckpt: string) => void): string {
  const dir = P(name);
  fs.cpSync(runDir, dir, { recursive: true });
  const ck = path.join(dir, 'checkpoints');
  const newest = fs
    .readdirSync(ck)
    .filter((n) => n.startsWith('step-'))
    .sort()
    .pop()!;
  damage(path.join(ck, newest));
  return dir;
}

/** Overwrites the first F64 of the linear checkpoint file with `value` (or flips its lowest bit). */
function poke(file: string, value: number | 'flip'): void {
  const buf = fs.readFileSync(file);
  const at = 8 + Number(buf.readBigUInt64LE(0));
  if (value === 'flip') buf[at] ^= 1;
  else buf.writeDoubleLE(value, at);
  fs.writeFileSync(file, buf);
}

interface Case {
  name: string;
  args: () => string[];
  /** Expected exit code (default 1). */
  code?: number;
  /** What stderr must say (the input named, the fix). */
  err?: RegExp;
  /** Paths that must not exist afterwards (no half-written output). */
  absent?: () => string[];
  /** Extra checks. */
  check?: (r: Result) => void;
}

const tr = (...a: string[]) => [
  'train',
  ...(a.includes('--steps') ? [] : ['--steps', '1']),
  '--batch-size',
  '2',
  '--group-size',
  '2',
  '--val-every',
  '0',
  '--set',
  'plots=false',
  '--set',
  'progress=false',
  '--set',
  'data.pairs=2',
  '--set',
  'data.valPairs=1',
  ...a,
];
const ev = (data: string, ...a: string[]) => [
  'eval',
  data,
  '--base-url',
  'http://127.0.0.1:1/v1',
  '--model',
  'm',
  '--out',
  P('ev-out'),
  '--quiet',
  ...a,
];
const syn = (...a: string[]) => ['synth', '--out', P('syn-out'), '--no-frames', '--no-sheet', ...a];

const CASES: Case[] = [
  // ---- the command line itself
  { name: 'no command', args: () => [], err: /Name a command/ },
  { name: 'unknown command', args: () => ['frobnicate'], err: /Unknown argument: frobnicate/ },
  { name: 'unknown flag', args: () => ['doctor', '--frobnicate'], err: /Unknown argument: frobnicate/ },
  { name: '--help', args: () => ['--help'], code: 0 },
  { name: 'eval --help', args: () => ['eval', '--help'], code: 0 },
  { name: 'train --help', args: () => ['train', '--help'], code: 0 },
  // ---- synth
  { name: 'synth without --out', args: () => ['synth'], err: /Missing required argument: out/ },
  {
    name: 'synth --out naming a file',
    args: () => ['synth', '--out', P('good.jsonl'), '--no-frames'],
    err: /--out .*good\.jsonl: is a file; --out names the folder/,
  },
  {
    name: 'synth --pairs 0',
    args: () => syn('--pairs', '0'),
    err: /--pairs 0: expected an integer >= 1/,
    absent: () => [P('syn-out')],
  },
  {
    name: 'synth --pairs -3',
    args: () => syn('--pairs', '-3'),
    err: /--pairs -3: expected an integer >= 1/,
    absent: () => [P('syn-out')],
  },
  {
    name: 'synth --pairs 1.5',
    args: () => syn('--pairs', '1.5'),
    err: /--pairs 1\.5: expected an integer/,
    absent: () => [P('syn-out')],
  },
  {
    name: 'synth --pairs abc',
    args: () => syn('--pairs', 'abc'),
    err: /--pairs: expected a number/,
    absent: () => [P('syn-out')],
  },
  {
    name: 'synth --pairs 1e9',
    args: () => syn('--pairs', '1e9'),
    err: /--pairs 1000000000 x 4 categories .* records, more than the 2000000/,
    absent: () => [P('syn-out')],
  },
  {
    name: 'synth --pairs 2e5 with frames beyond the disk',
    args: () => ['synth', '--out', P('syn-out'), '--pairs', '200000', '--num-frames', '1024', '--size', '1024'],
    err: /would write about .* GB of frames, more than the .* free/,
    absent: () => [P('syn-out')],
  },
  {
    name: 'synth --num-frames 1',
    args: () => syn('--num-frames', '1'),
    err: /--num-frames 1: expected an integer in \[2, 1024\]/,
  },
  { name: 'synth --num-frames 5000', args: () => syn('--num-frames', '5000'), err: /--num-frames 5000/ },
  {
    name: 'synth --size 4',
    args: () => syn('--size', '4'),
    err: /--size 4: expected an integer in \[8, 1024\] \(pixels\)/,
  },
  { name: 'synth --size 99999', args: () => syn('--size', '99999'), err: /--size 99999/ },
  {
    name: 'synth --shortcut-p 2',
    args: () => syn('--shortcut-p', '2'),
    err: /--shortcut-p 2: expected a probability in \[0, 1\]/,
  },
  { name: 'synth --categories bogus', args: () => syn('--categories', 'bogus'), err: /--categories.*'bogus'/ },
  { name: 'synth --categories empty', args: () => syn('--categories', ','), err: /--categories/ },
  { name: 'synth --categories other', args: () => syn('--categories', 'other'), err: /--categories.*'other'/ },
  { name: 'synth --split bogus', args: () => syn('--split', 'bogus'), err: /Invalid values:[\s\S]*split/ },
  { name: 'synth --format gif', args: () => syn('--format', 'gif'), err: /Invalid values:[\s\S]*format/ },
  {
    name: 'synth --frames 16 (a count elsewhere)',
    args: () => syn('--frames', '16'),
    err: /in crpo synth, --frames is the switch for writing frame folders: the frame count is --num-frames 16/,
  },
  { name: 'synth --seed 0.5', args: () => syn('--seed', '0.5'), err: /--seed 0\.5: expected an integer/ },
  {
    name: 'synth --pairs 1 (works)',
    args: () => ['synth', '--out', P('syn-ok'), '--pairs', '1', '--no-frames'],
    code: 0,
    check: (r) => {
      expect(r.out).toMatch(/train: 4 pairs, 8 records/);
      expect(fs.existsSync(P('syn-ok', 'train.jsonl'))).toBe(true);
    },
  },
  // ---- dybench validate / import / build
  {
    name: 'validate a missing file',
    args: () => ['dybench', 'validate', P('nope.jsonl')],
    err: /DyBench JSONL file not found: .*nope\.jsonl/,
  },
  {
    name: 'validate a folder',
    args: () => ['dybench', 'validate', P('emptydir')],
    err: /is a directory, expected a file: .*emptydir/,
  },
  {
    name: 'validate an empty file',
    args: () => ['dybench', 'validate', P('empty.jsonl')],
    err: /empty\.jsonl: no records \(the file is empty\)/,
  },
  {
    name: 'validate a blank file',
    args: () => ['dybench', 'validate', P('blank.jsonl')],
    err: /blank\.jsonl: no records \(the file is blank\)/,
  },
  {
    name: 'validate non-UTF-8 bytes',
    args: () => ['dybench', 'validate', P('latin1.jsonl')],
    err: /latin1\.jsonl:2: DyBench JSONL file is not valid UTF-8 \(byte 0xe9 at offset \d+\); save it as UTF-8/,
  },
  {
    name: 'validate a UTF-16 file',
    args: () => ['dybench', 'validate', write('utf16.jsonl', Buffer.from('\ufeff' + good, 'utf16le'))],
    err: /utf16\.jsonl:1: DyBench JSONL file is not valid UTF-8 \(byte 0xff at offset 0\)/,
  },
  {
    name: 'validate a truncated file',
    args: () => ['dybench', 'validate', P('truncated.jsonl')],
    err: /truncated\.jsonl:8: invalid JSON/,
  },
  {
    name: 'validate a line that is an array',
    args: () => ['dybench', 'validate', P('array-line.jsonl')],
    err: /array-line\.jsonl:9: expected a JSON object/,
  },
  {
    name: 'validate a null line',
    args: () => ['dybench', 'validate', P('nulls.jsonl')],
    err: /nulls\.jsonl:1: expected a JSON object/,
  },
  {
    name: 'validate a wrong-type field',
    args: () => ['dybench', 'validate', P('wrong-type.jsonl')],
    err: /wrong-type\.jsonl:2:answer/,
  },
  {
    name: 'validate an out-of-range answer',
    args: () => ['dybench', 'validate', P('bad-answer.jsonl')],
    err: /bad-answer\.jsonl:2:answer: expected an index of one of the 3 options/,
  },
  {
    name: 'validate a huge inline scene',
    args: () => ['dybench', 'validate', P('huge-scene.jsonl')],
    err: /huge-scene\.jsonl:2:video\.frames: expected at most 4096 frames[\s\S]*huge-scene\.jsonl:2:video: the inline clip would take/,
  },
  {
    name: 'validate --lenient reports and exits 1',
    args: () => ['dybench', 'validate', P('bad-answer.jsonl'), '--lenient'],
    err: /bad-answer\.jsonl: 2 record\(s\) skipped/,
    check: (r) => expect(r.out).toMatch(/bad-answer\.jsonl:2:answer/),
  },
  {
    name: 'validate a good file (works)',
    args: () => ['dybench', 'validate', P('good.jsonl')],
    code: 0,
    check: (r) => expect(r.out).toMatch(/8 records, 4 pairs/),
  },
  {
    name: 'validate --check-files on missing videos',
    args: () => ['dybench', 'validate', P('mixed.jsonl'), '--check-files', '--video-root', P('emptydir')],
    err: /mixed\.jsonl:1:video: expected an existing video file/,
  },
  { name: 'dybench without a subcommand', args: () => ['dybench'], err: /Name a dybench command/ },
  {
    name: 'import a missing file',
    args: () => ['dybench', 'import', 'dybench', P('nope.json'), '--out', P('imp.jsonl')],
    err: /nope\.json/,
    absent: () => [P('imp.jsonl')],
  },
  {
    name: 'import an empty file',
    args: () => ['dybench', 'import', 'timeblind', P('empty.jsonl'), '--out', P('imp.jsonl')],
    err: /no records imported from .*empty\.jsonl; nothing written/,
    absent: () => [P('imp.jsonl')],
  },
  {
    name: 'import with a bad --field',
    args: () => ['dybench', 'import', 'dybench', P('good.jsonl'), '--out', P('imp.jsonl'), '--field', 'nonsense'],
    err: /--field|nonsense/,
    absent: () => [P('imp.jsonl')],
  },
  {
    name: 'build --crf 99',
    args: () => ['dybench', 'build', '--annotations', P('good.jsonl'), '--out', P('build-out'), '--crf', '99'],
    err: /--crf 99: expected an integer in \[0, 51\]/,
    absent: () => [P('build-out')],
  },
  {
    name: 'build --fps 0',
    args: () => ['dybench', 'build', '--annotations', P('good.jsonl'), '--out', P('build-out'), '--fps', '0'],
    err: /--fps 0: expected a frame rate/,
    absent: () => [P('build-out')],
  },
  {
    name: 'build --frames -2',
    args: () => ['dybench', 'build', '--annotations', P('good.jsonl'), '--out', P('build-out'), '--frames', '-2'],
    err: /--frames -2/,
    absent: () => [P('build-out')],
  },
  {
    name: 'build --concurrency 0',
    args: () => ['dybench', 'build', '--annotations', P('good.jsonl'), '--out', P('build-out'), '--concurrency', '0'],
    err: /--concurrency 0/,
    absent: () => [P('build-out')],
  },
  {
    name: 'build a missing annotations file',
    args: () => ['dybench', 'build', '--annotations', P('nope.jsonl'), '--out', P('build-out')],
    err: /nope\.jsonl/,
  },
  // ---- eval
  { name: 'eval without data', args: () => ['eval'], err: /name the DyBench JSONL to evaluate/ },
  {
    name: 'eval a missing file',
    args: () => ev(P('nope.jsonl')),
    err: /not found: .*nope\.jsonl/,
    absent: () => [P('ev-out')],
  },
  {
    name: 'eval a folder',
    args: () => ev(P('emptydir')),
    err: /is a directory, expected a file/,
    absent: () => [P('ev-out')],
  },
  {
    name: 'eval an empty file',
    args: () => ev(P('empty.jsonl')),
    err: /empty\.jsonl: no records/,
    absent: () => [P('ev-out')],
  },
  {
    name: 'eval a blank file',
    args: () => ev(P('blank.jsonl')),
    err: /blank\.jsonl: no records/,
    absent: () => [P('ev-out')],
  },
  {
    name: 'eval non-UTF-8',
    args: () => ev(P('latin1.jsonl')),
    err: /latin1\.jsonl:2: .*not valid UTF-8/,
    absent: () => [P('ev-out')],
  },
  {
    name: 'eval a truncated file',
    args: () => ev(P('truncated.jsonl')),
    err: /truncated\.jsonl:8: invalid JSON/,
    absent: () => [P('ev-out')],
  },
  {
    name: 'eval a huge inline scene',
    args: () => ev(P('huge-scene.jsonl')),
    err: /huge-scene\.jsonl:2:video/,
    absent: () => [P('ev-out')],
  },
  {
    name: 'eval --out naming a file',
    args: () => [
      'eval',
      P('good.jsonl'),
      '--base-url',
      'http://127.0.0.1:1/v1',
      '--model',
      'm',
      '--out',
      P('good.jsonl'),
    ],
    err: /--out .*good\.jsonl: is a file; --out names the folder/,
  },
  {
    name: 'eval --frames 0',
    args: () => ev(P('good.jsonl'), '--frames', '0'),
    err: /--frames 0: expected an integer in \[1, 4096\]/,
  },
  {
    name: 'eval --frames 1000000',
    args: () => ev(P('good.jsonl'), '--frames', '1000000'),
    err: /--frames 1000000: expected an integer in \[1, 4096\]/,
    absent: () => [P('ev-out')],
  },
  {
    name: 'eval --frames 4096 x --max-pixels beyond memory',
    args: () => ev(P('good.jsonl'), '--frames', '4096', '--max-pixels', '50000000', '--concurrency', '8'),
    err: /more than half of this machine's memory.*lower --frames, --max-pixels or --concurrency/,
    absent: () => [P('ev-out')],
  },
  { name: 'eval --frames abc', args: () => ev(P('good.jsonl'), '--frames', 'abc'), err: /--frames: expected a number/ },
  { name: 'eval --max-pixels 0', args: () => ev(P('good.jsonl'), '--max-pixels', '0'), err: /--max-pixels 0/ },
  {
    name: 'eval --timeout -1',
    args: () => ev(P('good.jsonl'), '--timeout', '-1'),
    err: /--timeout -1: expected a number of seconds/,
  },
  { name: 'eval --timeout 0', args: () => ev(P('good.jsonl'), '--timeout', '0'), err: /--timeout 0/ },
  { name: 'eval --retries -1', args: () => ev(P('good.jsonl'), '--retries', '-1'), err: /--retries -1/ },
  { name: 'eval --retries 1.5', args: () => ev(P('good.jsonl'), '--retries', '1.5'), err: /--retries 1\.5/ },
  {
    name: 'eval --max-tokens 0',
    args: () => ev(P('good.jsonl'), '--max-tokens', '0'),
    err: /--max-tokens 0: expected an integer in \[1, 1048576\] \(tokens\)/,
  },
  {
    name: 'eval --max-tokens 1e12',
    args: () => ev(P('good.jsonl'), '--max-tokens', '1e12'),
    err: /--max-tokens 1000000000000/,
  },
  { name: 'eval --temperature -1', args: () => ev(P('good.jsonl'), '--temperature', '-1'), err: /--temperature -1/ },
  { name: 'eval --concurrency 0', args: () => ev(P('good.jsonl'), '--concurrency', '0'), err: /--concurrency 0/ },
  {
    name: 'eval --concurrency 100000',
    args: () => ev(P('good.jsonl'), '--concurrency', '100000'),
    err: /--concurrency 100000/,
  },
  { name: 'eval --jpeg-quality 0', args: () => ev(P('good.jsonl'), '--jpeg-quality', '0'), err: /--jpeg-quality 0/ },
  { name: 'eval --bootstrap -1', args: () => ev(P('good.jsonl'), '--bootstrap', '-1'), err: /--bootstrap -1/ },
  { name: 'eval --limit 0', args: () => ev(P('good.jsonl'), '--limit', '0'), err: /--limit 0/ },
  {
    name: 'eval --kind bogus',
    args: () => ev(P('good.jsonl'), '--kind', 'bogus'),
    err: /--kind bogus: expected 'openai'/,
  },
  {
    name: 'eval without --base-url',
    args: () => ['eval', P('good.jsonl'), '--model', 'm', '--out', P('ev-out')],
    err: /no endpoint: pass --base-url/,
  },
  {
    name: 'eval without --model',
    args: () => ['eval', P('good.jsonl'), '--base-url', 'http://127.0.0.1:1/v1', '--out', P('ev-out')],
    err: /no model name: pass --model/,
  },
  {
    name: 'eval --base-url not a URL',
    args: () => ['eval', P('good.jsonl'), '--base-url', 'localhost-8000', '--model', 'm', '--out', P('ev-out')],
    err: /--base-url.*for baseURL but received 'localhost-8000'/,
  },
  {
    name: 'eval a number flag given twice',
    args: () => ev(P('good.jsonl'), '--frames', '4', '--frames', '8'),
    err: /--frames given 2 times \(4, 8\); give it once/,
  },
  {
    name: 'eval --category bogus',
    args: () => ev(P('good.jsonl'), '--category', 'bogus'),
    err: /Invalid values:[\s\S]*category/,
  },
  {
    name: 'eval against an endpoint that is down',
    args: () => [
      'eval',
      P('good.jsonl'),
      '--base-url',
      'http://127.0.0.1:1/v1',
      '--model',
      'm',
      '--out',
      P('ev-down'),
      '--quiet',
      '--retries',
      '0',
      '--limit',
      '1',
      '--bootstrap',
      '0',
    ],
    err: /2 of 2 samples failed .*after --retries 0/,
  },
  {
    name: 'eval a frames folder with mixed frame sizes',
    args: () => [
      'eval',
      P('mixed.jsonl'),
      '--base-url',
      'http://127.0.0.1:1/v1',
      '--model',
      'm',
      '--out',
      P('ev-mixed'),
      '--retries',
      '0',
      '--bootstrap',
      '0',
    ],
    err: /frames folder .*mixed\/a mixes frame sizes: frame_0\.png is 32x32, frame_2\.png is 48x32/,
  },
  {
    name: 'eval --kind checkpoint without a checkpoint',
    args: () => ['eval', P('good.jsonl'), '--kind', 'checkpoint', '--out', P('ev-out')],
    err: /needs --checkpoint/,
  },
  {
    name: 'eval --checkpoint missing',
    args: () => ['eval', P('good.jsonl'), '--kind', 'checkpoint', '--checkpoint', P('nope'), '--out', P('ev-out')],
    err: /--checkpoint .*nope: no such folder/,
    absent: () => [P('ev-out')],
  },
  {
    name: 'eval --checkpoint an empty folder',
    args: () => ['eval', P('good.jsonl'), '--kind', 'checkpoint', '--checkpoint', P('emptydir'), '--out', P('ev-out')],
    err: /emptydir: holds no model/,
    absent: () => [P('ev-out')],
  },
  {
    name: 'eval --kind checkpoint (works, honours --max-tokens)',
    args: () => [
      'eval',
      P('good.jsonl'),
      '--kind',
      'checkpoint',
      '--checkpoint',
      linearCkpt,
      '--out',
      P('ev-ck'),
      '--quiet',
      '--bootstrap',
      '0',
      '--max-tokens',
      '2',
      '--retries',
      '0',
      '--timeout',
      '30',
    ],
    code: 0,
    check: (r) => expect(r.out).toMatch(/with the null option/),
  },
  {
    name: 'eval resume with a corrupt run.json',
    args: () => {
      fs.cpSync(P('ev-ck'), P('ev-ck2'), { recursive: true });
      fs.writeFileSync(P('ev-ck2', 'run.json'), '{"fingerprint": ');
      return [
        'eval',
        P('good.jsonl'),
        '--kind',
        'checkpoint',
        '--checkpoint',
        linearCkpt,
        '--out',
        P('ev-ck2'),
        '--quiet',
      ];
    },
    err: /ev-ck2\/run\.json: not valid JSON .*--overwrite/,
  },
  {
    name: 'eval resume with a corrupt samples.jsonl',
    args: () => {
      fs.cpSync(P('ev-ck'), P('ev-ck3'), { recursive: true });
      fs.writeFileSync(P('ev-ck3', 'samples.jsonl'), 'garbage\n{}\n');
      return [
        'eval',
        P('good.jsonl'),
        '--kind',
        'checkpoint',
        '--checkpoint',
        linearCkpt,
        '--out',
        P('ev-ck3'),
        '--quiet',
      ];
    },
    err: /samples\.jsonl:1: invalid JSON.*--overwrite/,
  },
  {
    name: 'eval --correlate a missing folder',
    args: () => ['eval', '--correlate', P('nope1'), P('nope2')],
    err: /nope1.*summary\.json|summary\.json.*nope1/,
  },
  // ---- route
  {
    name: 'route a missing file',
    args: () => ['route', P('nope.jsonl'), '-o', P('routed.jsonl')],
    err: /not found: .*nope\.jsonl/,
    absent: () => [P('routed.jsonl')],
  },
  {
    name: 'route an empty file',
    args: () => ['route', P('empty.jsonl'), '-o', P('routed.jsonl')],
    err: /empty\.jsonl: no records/,
    absent: () => [P('routed.jsonl')],
  },
  {
    name: 'route a blank file',
    args: () => ['route', P('blank.jsonl'), '-o', P('routed.jsonl')],
    err: /blank\.jsonl: no records/,
    absent: () => [P('routed.jsonl')],
  },
  {
    name: 'route non-UTF-8',
    args: () => ['route', P('latin1.jsonl'), '-o', P('routed.jsonl')],
    err: /latin1\.jsonl:2: .*not valid UTF-8/,
    absent: () => [P('routed.jsonl')],
  },
  {
    name: 'route a truncated file',
    args: () => ['route', P('truncated.jsonl'), '-o', P('routed.jsonl')],
    err: /truncated\.jsonl:8: invalid JSON/,
    absent: () => [P('routed.jsonl')],
  },
  {
    name: 'route a huge inline scene',
    args: () => ['route', P('huge-scene.jsonl'), '-o', P('routed.jsonl')],
    err: /huge-scene\.jsonl:2:video/,
    absent: () => [P('routed.jsonl')],
  },
  { name: 'route without -o', args: () => ['route', P('good.jsonl')], err: /needs -o <out\.jsonl>/ },
  {
    name: 'route -o a folder',
    args: () => ['route', P('good.jsonl'), '-o', P('emptydir')],
    err: /-o .*emptydir: is a folder; name the output file/,
  },
  {
    name: 'route -o the input',
    args: () => ['route', P('good.jsonl'), '-o', P('good.jsonl')],
    err: /is the input file/,
  },
  {
    name: 'route --backend bogus',
    args: () => ['route', P('good.jsonl'), '-o', P('routed.jsonl'), '--backend', 'bogus'],
    err: /Invalid values:[\s\S]*backend/,
    absent: () => [P('routed.jsonl')],
  },
  {
    name: 'route --concurrency 0',
    args: () => ['route', P('good.jsonl'), '-o', P('routed.jsonl'), '--concurrency', '0'],
    err: /--concurrency 0/,
    absent: () => [P('routed.jsonl')],
  },
  {
    name: 'route --timeout -5',
    args: () => ['route', P('good.jsonl'), '-o', P('routed.jsonl'), '--timeout', '-5'],
    err: /--timeout -5: expected an integer in \[1, 86400000\] \(ms\)/,
    absent: () => [P('routed.jsonl')],
  },
  {
    name: 'route two inputs',
    args: () => ['route', P('good.jsonl'), P('good.jsonl'), '-o', P('routed.jsonl')],
    err: /takes one input file/,
  },
  { name: 'route eval without files', args: () => ['route', 'eval'], err: /needs at least one labelled JSONL/ },
  { name: 'route eval a missing file', args: () => ['route', 'eval', P('nope.jsonl')], err: /nope\.jsonl/ },
  {
    name: 'route eval an empty file',
    args: () => ['route', 'eval', P('empty.jsonl')],
    err: /empty\.jsonl: no labelled questions \(the file is empty\)/,
  },
  {
    name: 'route eval non-UTF-8',
    args: () => ['route', 'eval', P('latin1.jsonl')],
    err: /latin1\.jsonl:2: labelled file is not valid UTF-8 \(byte 0xe9/,
  },
  {
    name: 'route -o into another folder keeps video paths valid',
    args: () => ['route', P('mixed.jsonl'), '-o', P('elsewhere', 'deep', 'routed.jsonl')],
    code: 0,
    check: () => {
      const out = fs
        .readFileSync(P('elsewhere', 'deep', 'routed.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { video: string });
      expect(out.map((r) => r.video)).toEqual([
        path.join('..', '..', 'mixed', 'a'),
        path.join('..', '..', 'mixed', 'b'),
      ]);
      expect(fs.existsSync(path.resolve(P('elsewhere', 'deep'), out[0].video))).toBe(true);
    },
  },
  // ---- train
  {
    name: 'train --config missing',
    args: () => tr('--config', P('nope.yaml')),
    err: /config file not found: .*nope\.yaml/,
  },
  {
    name: 'train --config empty',
    args: () => tr('--config', P('config-empty.yaml'), '--out', P('tr-out')),
    err: /--config .*config-empty\.yaml: the file is empty/,
    absent: () => [P('tr-out')],
  },
  {
    name: 'train --config non-UTF-8',
    args: () =>
      tr(
        '--config',
        write(
          'config-latin1.yaml',
          Buffer.from([0x73, 0x74, 0x65, 0x70, 0x73, 0x3a, 0x20, 0x31, 0x0a, 0x23, 0xff, 0x0a]),
        ),
      ),
    err: /config-latin1\.yaml:2: config file is not valid UTF-8 \(byte 0xff at offset 10\)/,
  },
  {
    name: 'train --config a folder',
    args: () => tr('--config', P('emptydir')),
    err: /--config .*emptydir: is a folder; name the YAML or JSON config file/,
  },
  {
    name: 'train --config invalid YAML',
    args: () => tr('--config', P('config-bad.yaml')),
    err: /config-bad\.yaml: not valid YAML/,
  },
  {
    name: 'train --config a list',
    args: () => tr('--config', P('config-list.yaml')),
    err: /config-list\.yaml: expected a mapping/,
  },
  {
    name: 'train --config unknown key',
    args: () => tr('--config', P('config-unknown.yaml')),
    err: /config-unknown\.yaml: unknown config key 'stepz'/,
  },
  {
    name: 'train --config wrong type',
    args: () => tr('--config', P('config-wrongtype.yaml')),
    err: /config-wrongtype\.yaml: lr: expected a number but received "many"/,
  },
  {
    name: 'train --config naming missing data',
    args: () => tr('--config', P('config-missing-data.yaml')),
    err: /config-missing-data\.yaml: data\.train: 'nowhere\.jsonl' not found, neither next to the config/,
  },
  {
    name: 'train --config with a path relative to the config (works)',
    args: () => ['train', '--config', P('sub', 'config-rel.yaml')],
    code: 0,
    check: () => expect(fs.existsSync(P('rel-run', 'checkpoints'))).toBe(true),
  },
  {
    name: 'train --out naming a file',
    args: () => tr('--out', P('good.jsonl')),
    err: /--out .*good\.jsonl: is a file; --out names the run folder/,
  },
  {
    name: 'train --steps -1',
    args: () => tr('--steps', '-1', '--out', P('tr-out')),
    err: /steps: expected a number >= /,
    absent: () => [P('tr-out')],
  },
  {
    name: 'train --steps abc',
    args: () => tr('--steps', 'abc', '--out', P('tr-out')),
    err: /--steps: expected a number/,
    absent: () => [P('tr-out')],
  },
  { name: 'train --lr abc', args: () => tr('--lr', 'abc', '--out', P('tr-out')), err: /--lr: expected a number/ },
  {
    name: 'train --algo bogus',
    args: () => tr('--algo', 'bogus', '--out', P('tr-out')),
    err: /algo: unknown algorithm 'bogus'; known: /,
  },
  {
    name: 'train --data missing',
    args: () => tr('--data', P('nope.jsonl'), '--out', P('tr-out')),
    err: /data\.train: data file not found: .*nope\.jsonl/,
    absent: () => [P('tr-out')],
  },
  {
    name: 'train --data empty',
    args: () => tr('--data', P('empty.jsonl'), '--val-data', '', '--out', P('tr-out')),
    err: /empty\.jsonl: no records/,
    absent: () => [P('tr-out')],
  },
  {
    name: 'train --data non-UTF-8',
    args: () => tr('--data', P('latin1.jsonl'), '--val-data', '', '--out', P('tr-out')),
    err: /latin1\.jsonl:2: .*not valid UTF-8/,
    absent: () => [P('tr-out')],
  },
  {
    name: 'train --data huge inline scene',
    args: () => tr('--data', P('huge-scene.jsonl'), '--val-data', '', '--out', P('tr-out')),
    err: /huge-scene\.jsonl:2:video/,
    absent: () => [P('tr-out')],
  },
  {
    name: 'train --init missing',
    args: () => tr('--init', P('nope'), '--out', P('tr-out')),
    err: /policy\.init: checkpoint folder not found: .*nope/,
  },
  {
    name: 'train --init a NaN checkpoint',
    args: () => {
      fs.cpSync(linearCkpt, P('nan-ckpt'), { recursive: true });
      poke(P('nan-ckpt', 'policy.safetensors'), NaN);
      return tr('--init', P('nan-ckpt'), '--out', P('tr-out'));
    },
    err: /--init .*nan-ckpt: .*policy\.safetensors: tensor '.+' holds a non-finite weight \(NaN at index 0\)/,
    absent: () => [P('tr-out')],
  },
  {
    name: 'train --init a run folder (works)',
    args: () => tr('--init', runDir, '--out', P('tr-init-run')),
    code: 0,
    check: (r) => expect(r.err).toMatch(/from .*run\/checkpoints\/step-000002/),
  },
  {
    name: 'train --resume a missing folder',
    args: () => tr('--resume', P('nope'), '--out', P('tr-out')),
    err: /--resume .*nope: not a training checkpoint folder/,
  },
  {
    name: 'train --model an empty folder',
    args: () => tr('--model', P('emptydir'), '--out', P('tr-out')),
    err: /--model .*emptydir: holds no model/,
  },
  {
    name: 'train --set without =',
    args: () => tr('--set', 'steps', '--out', P('tr-out')),
    err: /--set steps: expected key=value/,
  },
  { name: 'train --nproc 0', args: () => tr('--nproc', '0', '--out', P('tr-out')), err: /nproc/ },
  {
    name: 'resume from a corrupt state.json',
    args: () =>
      tr(
        '--steps',
        '3',
        '--out',
        damagedRun('run-badstate', (c) => fs.writeFileSync(path.join(c, 'state.json'), '{"step": 2,')),
      ),
    err: /step-000002\/state\.json: not valid JSON .*the checkpoint is damaged: resume from an earlier checkpoint/,
  },
  {
    name: 'resume from a state.json with a wrong field',
    args: () =>
      tr(
        '--steps',
        '3',
        '--out',
        damagedRun('run-badfield', (c) =>
          fs.writeFileSync(
            path.join(c, 'state.json'),
            JSON.stringify({ step: 'two', cursor: 4, seed: 0, algo: 'crpo', digest: '' }),
          ),
        ),
      ),
    err: /state\.json: field 'step' must be an integer >= 0, got "two"/,
  },
  {
    name: 'resume from a state.json that is an array',
    args: () =>
      tr(
        '--steps',
        '3',
        '--out',
        damagedRun('run-array', (c) => fs.writeFileSync(path.join(c, 'state.json'), '[]')),
      ),
    err: /state\.json: expected a JSON object/,
  },
  {
    name: 'resume with a flipped weight bit (digest check)',
    args: () =>
      tr(
        '--steps',
        '3',
        '--out',
        damagedRun('run-flip', (c) => poke(path.join(c, 'policy.safetensors'), 'flip')),
      ),
    err: /state\.json: the weights in .*step-000002 do not match the digest saved with them/,
  },
  {
    name: 'resume from NaN weights',
    args: () =>
      tr(
        '--steps',
        '3',
        '--out',
        damagedRun('run-nan', (c) => poke(path.join(c, 'policy.safetensors'), Infinity)),
      ),
    err: /--resume .*step-000002: .*holds a non-finite weight \(Infinity at index 0\)/,
  },
  {
    name: 'train into a run folder locked by a live process',
    args: () => {
      const dir = P('run-locked');
      fs.cpSync(runDir, dir, { recursive: true });
      fs.writeFileSync(
        path.join(dir, '.lock'),
        JSON.stringify({ pid: 1, host: os.hostname(), started: '2026-01-01T00:00:00Z', command: 'crpo train --out x' }),
      );
      return tr('--steps', '3', '--out', dir);
    },
    err: /run folder .*run-locked is in use by pid 1 on .* \(started 2026-01-01T00:00:00Z: crpo train --out x\); wait for it to finish/,
    check: () => expect(fs.existsSync(P('run-locked', '.lock'))).toBe(true),
  },
  {
    name: 'train over a stale lock (works, lock released)',
    args: () => {
      const dir = P('run-stale');
      fs.cpSync(runDir, dir, { recursive: true });
      fs.writeFileSync(
        path.join(dir, '.lock'),
        JSON.stringify({ pid: 2 ** 22 + 17, host: os.hostname(), started: 'x', command: 'y' }),
      );
      return tr('--steps', '3', '--out', dir);
    },
    code: 0,
    check: () => expect(fs.existsSync(P('run-stale', '.lock'))).toBe(false),
  },
  // ---- serve (failures before listening: the command would otherwise run until Ctrl-C)
  { name: 'serve a missing folder', args: () => ['serve', P('nope')], err: /crpo serve .*nope: no such folder/ },
  {
    name: 'serve an empty folder',
    args: () => ['serve', P('emptydir')],
    err: /crpo serve .*emptydir: holds no model; looked for/,
  },
  { name: 'serve a file', args: () => ['serve', P('good.jsonl')], err: /good\.jsonl: not a folder/ },
  {
    name: 'serve --port 99999',
    args: () => ['serve', linearCkpt, '--port', '99999'],
    err: /--port 99999: expected an integer in \[0, 65535\]/,
  },
  {
    name: 'serve --port -1',
    args: () => ['serve', linearCkpt, '--port', '-1'],
    err: /--port -1: expected an integer in \[0, 65535\]/,
  },
  { name: 'serve --port 1.5', args: () => ['serve', linearCkpt, '--port', '1.5'], err: /--port 1\.5/ },
  { name: 'serve --port abc', args: () => ['serve', linearCkpt, '--port', 'abc'], err: /--port: expected a number/ },
  {
    name: 'serve --port in use',
    args: () => ['serve', linearCkpt, '--port', String(busyPort), '--quiet'],
    err: /--port \d+: 127\.0\.0\.1:\d+ is already in use/,
  },
  {
    name: 'serve --host with a space',
    args: () => ['serve', linearCkpt, '--host', 'bad host'],
    err: /--host "bad host": expected an interface address/,
  },
  {
    name: 'serve --host not on this machine',
    args: () => ['serve', linearCkpt, '--host', '203.0.113.7', '--port', '0'],
    err: /--host 203\.0\.113\.7: not an address of this machine/,
  },
  {
    name: 'serve --max-frames 0',
    args: () => ['serve', linearCkpt, '--max-frames', '0'],
    err: /--max-frames 0: expected an integer in \[1, 4096\]/,
  },
  {
    name: 'serve --max-body-mb 0',
    args: () => ['serve', linearCkpt, '--max-body-mb', '0'],
    err: /--max-body-mb 0: expected a size in MiB/,
  },
  {
    name: 'serve --max-concurrent -2',
    args: () => ['serve', linearCkpt, '--max-concurrent', '-2'],
    err: /--max-concurrent -2/,
  },
  {
    name: 'serve a NaN checkpoint',
    args: () => {
      fs.cpSync(linearCkpt, P('nan-serve'), { recursive: true });
      poke(P('nan-serve', 'policy.safetensors'), NaN);
      return ['serve', P('nan-serve'), '--port', '0'];
    },
    err: /crpo serve .*nan-serve: .*holds a non-finite weight/,
  },
  {
    name: 'serve a truncated checkpoint',
    args: () => {
      fs.cpSync(linearCkpt, P('cut-serve'), { recursive: true });
      const f = P('cut-serve', 'policy.safetensors');
      fs.truncateSync(f, 20);
      return ['serve', P('cut-serve'), '--port', '0'];
    },
    err: /cut-serve.*policy\.safetensors/,
  },
  // ---- dist, doctor, others (flags only; no process group is started)
  { name: 'dist bogus action', args: () => ['dist', 'bogus'], err: /Invalid values:[\s\S]*action/ },
  { name: 'dist --help names the installed torchrun', args: () => ['dist', '--help'], code: 0 },
  {
    name: 'doctor --json (works)',
    args: () => ['doctor', '--json'],
    code: 0,
    check: (r) => expect(JSON.parse(r.out).node).toBe(process.version),
  },
  {
    name: 'sft with an unknown flag',
    args: () => ['sft', '--out', P('sft-out'), '--bogus'],
    err: /Unknown argument: bogus/,
    absent: () => [P('sft-out')],
  },
  { name: 'reproduce with an unknown flag', args: () => ['reproduce', '--bogus'], err: /Unknown argument: bogus/ },
  { name: 'demo with an unknown flag', args: () => ['demo', '--bogus'], err: /Unknown argument: bogus/ },
];

describe('what a checkpoint says about its prompts (the model card)', () => {
  it('state.json of a crpo train checkpoint, else the run folder config.yaml (auto: on for crpo)', () => {
    const ck = path.join(runDir, 'checkpoints', 'step-000002');
    expect(trainingPromptOf(ck)).toEqual({ nullOption: true, source: path.join(ck, 'state.json') });
    const old = damagedRun('run-old-state', (c) => {
      const st = JSON.parse(fs.readFileSync(path.join(c, 'state.json'), 'utf8'));
      delete st.nullOption;
      fs.writeFileSync(path.join(c, 'state.json'), JSON.stringify(st));
    });
    expect(trainingPromptOf(path.join(old, 'checkpoints', 'step-000002'))).toEqual({
      nullOption: true,
      source: path.join(old, 'config.yaml'),
    });
    expect(trainingPromptOf(linearCkpt)).toEqual({ nullOption: true, source: path.join(linearCkpt, 'prompt.json') });
    expect(trainingPromptOf(P('emptydir'))).toBeUndefined();
  });
});

describe('crpo dist --help', () => {
  it('spells the torchrun line for the installed torchrun and names bin/crpo.js by its path', () => {
    expect(torchrunLine('1.13.0a0', '/x/bin/crpo.js')).toBe(
      'torchrun --no_python --nproc_per_node 2 /x/bin/crpo.js dist check',
    );
    expect(torchrunLine('2.3.1', '/x/bin/crpo.js')).toBe(
      'torchrun --no-python --nproc-per-node 2 /x/bin/crpo.js dist check',
    );
    const v = write('torch/version.py', "__version__ = '1.13.0a0'\n");
    expect(installedTorchVersion([P('nope.py'), v])).toBe('1.13.0a0');
    expect(installedTorchVersion([P('nope.py')])).toBeUndefined();
  });
});

describe('crpo CLI on bad and unusual input', () => {
  it(`has at least 100 command-line cases (${CASES.length})`, () => {
    expect(CASES.length).toBeGreaterThanOrEqual(100);
    expect(new Set(CASES.map((c) => c.name)).size).toBe(CASES.length);
  });
  for (const c of CASES) {
    it(c.name, async () => {
      const r = await cli(c.args());
      const want = c.code ?? 1;
      if (r.code !== want)
        throw new Error(`exit ${r.code}, expected ${want}\nstderr: ${r.err}\nstdout: ${r.out.slice(0, 2000)}`);
      expect(r.err).not.toMatch(/unexpected error/);
      expect(r.err).not.toMatch(/\n\s+at .+:\d+:\d+/); // no stack
      if (want !== 0) {
        expect(r.err).toMatch(/^crpo: /m);
        if (c.err) expect(r.err).toMatch(c.err);
      }
      for (const p of c.absent?.() ?? []) expect(fs.existsSync(p)).toBe(false);
      c.check?.(r);
    });
  }
});

// ---- the server over HTTP on 127.0.0.1 -----------------------------------------------------------
describe('crpo serve over HTTP on bad and unusual requests', () => {
  let server: RunningServer;
  const lines: string[] = [];
  let frames: string[] = [];
  const prompt = formatPrompt('In which direction does the object move?', ['left', 'right', 'up', 'down'], {
    nullOption: true,
  });

  beforeAll(async () => {
    server = await startServer({
      checkpoint: linearCkpt,
      port: 0,
      maxBodyBytes: 256 * 1024,
      maxConcurrent: 2,
      maxFrames: 16,
      log: (l) => lines.push(l),
    });
    const px = Buffer.alloc(32 * 32 * 3, 120);
    const png = await sharp(px, { raw: { width: 32, height: 32, channels: 3 } })
      .png()
      .toBuffer();
    frames = Array.from({ length: 8 }, () => `data:image/png;base64,${png.toString('base64')}`);
  });
  afterAll(() => server.close());

  const body = (over: Record<string, unknown> = {}, imgs: string[] = frames, text = prompt) => ({
    model: path.basename(linearCkpt),
    messages: [
      {
        role: 'user',
        content: [...imgs.map((url) => ({ type: 'image_url', image_url: { url } })), { type: 'text', text }],
      },
    ],
    ...over,
  });
  const post = async (payload: unknown, raw?: string, headers: Record<string, string> = {}) => {
    const r = await fetch(`${server.url}/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: raw ?? JSON.stringify(payload),
    });
    const text = await r.text();
    let json: {
      error?: { message: string; param: string | null };
      choices?: unknown[];
      crpo?: { adjusted: string[] };
    } = {};
    try {
      json = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return { status: r.status, json };
  };

  const HTTP_CASES: {
    name: string;
    req: () => Promise<{ status: number; json: { error?: { message: string } } }>;
    status: number;
    msg?: RegExp;
  }[] = [
    {
      name: 'malformed JSON',
      req: () => post(null, '{"messages": ['),
      status: 400,
      msg: /request body is not valid JSON/,
    },
    { name: 'a JSON array body', req: () => post([1, 2]), status: 400, msg: /request body must be a JSON object/ },
    { name: 'messages missing', req: () => post({ model: 'x' }), status: 404 },
    {
      name: 'messages not an array',
      req: () => post({ messages: 'hi' }),
      status: 400,
      msg: /'messages' must be a non-empty array/,
    },
    {
      name: 'messages empty',
      req: () => post({ messages: [] }),
      status: 400,
      msg: /'messages' must be a non-empty array/,
    },
    {
      name: 'a message without a role',
      req: () => post({ messages: [{ content: 'x' }] }),
      status: 400,
      msg: /messages\[0\] must be an object with a 'role'/,
    },
    {
      name: 'a content part of unknown type',
      req: () => post({ messages: [{ role: 'user', content: [{ type: 'audio' }] }] }),
      status: 400,
      msg: /messages\[0\]\.content\[0\]: expected a text or image_url part/,
    },
    { name: 'no frames', req: () => post(body({}, [])), status: 400, msg: /no video frames/ },
    {
      name: 'too many frames',
      req: () => post(body({}, Array(17).fill(frames[0]))),
      status: 400,
      msg: /17 image parts exceed the limit of 16/,
    },
    {
      name: 'a remote image URL',
      req: () => post(body({}, ['https://example.com/a.png'])),
      status: 400,
      msg: /image part 1: expected a base64 data URL/,
    },
    {
      name: 'a broken image',
      req: () => post(body({}, ['data:image/png;base64,AAAA'])),
      status: 400,
      msg: /image part 1: not a decodable image/,
    },
    {
      name: 'no lettered options',
      req: () => post(body({}, frames, 'What happens?')),
      status: 400,
      msg: /lettered options/,
    },
    {
      name: 'options out of order',
      req: () => post(body({}, frames, 'Q?\nA. x\nC. y')),
      status: 400,
      msg: /option letters must run A, B, C/,
    },
    { name: 'n 0', req: () => post(body({ n: 0 })), status: 400, msg: /'n' must be an integer in \[1, 16\]/ },
    { name: 'n 1000', req: () => post(body({ n: 1000 })), status: 400, msg: /'n' must be an integer/ },
    {
      name: 'temperature -1',
      req: () => post(body({ temperature: -1 })),
      status: 400,
      msg: /'temperature' must be a number in \[0, 10\]/,
    },
    { name: 'temperature a string', req: () => post(body({ temperature: 'hot' })), status: 400, msg: /'temperature'/ },
    {
      name: 'max_tokens 0',
      req: () => post(body({ max_tokens: 0 })),
      status: 400,
      msg: /'max_tokens' must be a positive integer, got 0/,
    },
    {
      name: 'max_tokens a string',
      req: () => post(body({ max_tokens: 'lots' })),
      status: 400,
      msg: /'max_tokens' must be a positive integer/,
    },
    { name: 'max_tokens 10^12 is clamped', req: () => post(body({ max_tokens: 1e12 })), status: 200 },
    { name: 'seed 1.5', req: () => post(body({ seed: 1.5 })), status: 400, msg: /'seed' must be an integer/ },
    { name: 'stream true', req: () => post(body({ stream: true })), status: 400, msg: /stream: true is not supported/ },
    {
      name: 'an unknown model',
      req: () => post(body({ model: 'gpt-4o' })),
      status: 404,
      msg: /model 'gpt-4o' is not served here/,
    },
    {
      name: 'an oversized body',
      req: () =>
        post(
          body(
            {},
            frames.map((f) => f + ' '.repeat(40_000)),
          ),
        ),
      status: 413,
      msg: /exceeds the limit of 262144 bytes/,
    },
    {
      name: 'an unknown route',
      req: async () => {
        const r = await fetch(`${server.url}/completions`, { method: 'POST', body: '{}' });
        return { status: r.status, json: (await r.json()) as { error?: { message: string } } };
      },
      status: 404,
      msg: /no route POST \/v1\/completions/,
    },
    {
      name: 'GET on the completions route',
      req: async () => {
        const r = await fetch(`${server.url}/chat/completions`);
        return { status: r.status, json: (await r.json()) as { error?: { message: string } } };
      },
      status: 405,
      msg: /GET is not allowed/,
    },
    {
      name: 'an image beyond the pixel limit',
      req: async () => {
        const big = await sharp({
          create: { width: 5000, height: 4000, channels: 3, background: { r: 0, g: 0, b: 0 } },
        })
          .png({ compressionLevel: 9 })
          .toBuffer();
        return post(body({}, [`data:image/png;base64,${big.toString('base64')}`]));
      },
      status: 400,
      msg: /image part 1: larger than 16777216 pixels/,
    },
  ];

  for (const c of HTTP_CASES) {
    it(c.name, async () => {
      const r = await c.req();
      expect(r.status).toBe(c.status);
      if (c.msg) expect(r.json.error?.message).toMatch(c.msg);
    });
  }

  it('a client that disconnects mid-body, then a burst of 12 requests: only 200s and 429s, then a correct answer', async () => {
    const url = new URL(`${server.url}/chat/completions`);
    const half = http.request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': '5000' },
    });
    half.on('error', () => undefined);
    half.write('{"messages": [');
    await new Promise((r) => setTimeout(r, 50));
    half.destroy();
    const burst = await Promise.all(Array.from({ length: 12 }, () => post(body())));
    for (const r of burst) expect([200, 429]).toContain(r.status);
    expect(burst.some((r) => r.status === 200)).toBe(true);
    const after = await post(body({ temperature: 0 }));
    expect(after.status).toBe(200);
    expect(after.json.choices).toHaveLength(1);
  });

  it('logged one line per request, with status and time, 4xx and 5xx included', () => {
    expect(lines.length).toBeGreaterThanOrEqual(HTTP_CASES.length + 13);
    for (const l of lines) expect(l).toMatch(/^\S+ (\S+) \S+ (\d{3}|-)( \(client closed\))? \d+ ms|^\S+ - - 400 0 ms/);
    expect(lines.some((l) => / 413 \d+ ms: request body/.test(l))).toBe(true);
    expect(lines.some((l) => / 200 \d+ ms; max_tokens 1000000000000 clamped to 4096/.test(l))).toBe(true);
  });
});
