/** Runs the ranks of test/fixtures/dist-worker.ts as child processes, as torchrun would. */
import { spawn } from 'child_process';
import * as path from 'path';
import { freePort } from '../../lib/distributed/launch';

const root = path.resolve(__dirname, '../..');
const worker = path.join(root, 'test/fixtures/dist-worker.ts');
const register = path.join(root, 'scripts/ts-register.js');

/**
 * Preloaded into every rank instead of scripts/ts-register.js alone: the same transpilation (that
 * hook, unchanged), with its output cached on disk by content (sha1 of file name, source and
 * TypeScript version) and reused by later ranks. Transpiling the trainer's imports took ~3 s of
 * CPU per process, more than the rest of a rank's start-up; the dist tests start ~40 ranks.
 */
const CACHED_REGISTER = `
const fs = require('fs'), path = require('path'), os = require('os'), crypto = require('crypto');
require(${JSON.stringify(register)});
const transpile = require.extensions['.ts'];
const dir = path.join(os.tmpdir(), 'crpo-dist-ts-cache-' + (process.getuid ? process.getuid() : 0));
const version = require(require.resolve('typescript/package.json', { paths: [${JSON.stringify(root)}] })).version;
require.extensions['.ts'] = function cachedTs(module, filename) {
  const source = fs.readFileSync(filename, 'utf8');
  const key = crypto.createHash('sha1').update(version + '\\0' + filename + '\\0' + source).digest('hex');
  const file = path.join(dir, key + '.js');
  let js;
  try { js = fs.readFileSync(file, 'utf8'); } catch {}
  if (js !== undefined) return module._compile(js, filename);
  const compile = module._compile;
  module._compile = function (out, name) {
    try {
      fs.mkdirSync(dir, { recursive: true });
      const tmp = file + '.' + process.pid;
      fs.writeFileSync(tmp, out);
      fs.renameSync(tmp, file);
    } catch {}
    return compile.call(this, out, name);
  };
  transpile(module, filename);
};
`;

export interface RankRun {
  rank: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * Starts `world` ranks of the worker fixture with torchrun's environment; resolves when all exit.
 * `detached`: every rank is the leader of a process group of its own (for process-group kills).
 */
export async function runRanks(
  scenario: string,
  world: number,
  extraEnv: Record<string, string> = {},
  onStdout?: (rank: number, text: string, kill: (r: number, s: NodeJS.Signals) => void) => void,
  opts: { detached?: boolean } = {},
): Promise<RankRun[]> {
  const port = await freePort();
  const t0 = Date.now();
  const procs = Array.from({ length: world }, (_, rank) =>
    spawn(process.execPath, ['-e', `${CACHED_REGISTER}\nrequire(${JSON.stringify(worker)});`, worker, scenario], {
      cwd: root,
      // detached: each rank leads its own process group, which it (or the test) may kill whole.
      detached: opts.detached ?? false,
      env: {
        ...process.env,
        ...extraEnv,
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: String(port),
        RANK: String(rank),
        WORLD_SIZE: String(world),
        LOCAL_RANK: String(rank),
        CRPO_NUM_THREADS: '1',
        OMP_NUM_THREADS: '1',
      },
    }),
  );
  const kill = (r: number, s: NodeJS.Signals) => procs[r].kill(s);
  return Promise.all(
    procs.map(
      (p, rank) =>
        new Promise<RankRun>((resolve) => {
          let stdout = '';
          let stderr = '';
          p.stdout.on('data', (b) => {
            stdout += b;
            onStdout?.(rank, String(b), kill);
          });
          p.stderr.on('data', (b) => (stderr += b));
          p.on('close', (code, signal) => resolve({ rank, code, signal, stdout, stderr, ms: Date.now() - t0 }));
        }),
    ),
  );
}

/** Why the dist tests cannot run here, or null when they can (the torch addon with native/torch/dist). */
export function distUnavailable(): string | null {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const native = require('../../lib/native') as typeof import('../../lib/native');
  if (!native.hasAddon('torch')) return 'the torch addon is not built (npm run build:torch)';
  if (typeof (native.torchAddon() as unknown as { distInit?: unknown }).distInit !== 'function') {
    return 'the torch addon was built before native/torch/dist existed (npm run build:torch)';
  }
  return null;
}

/** The `result` of the first JSON line a rank printed; throws with the rank's exit code and stderr when it printed none. */
export function rankResult(r: RankRun): any {
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`rank ${r.rank} printed no result (exit ${r.code}): ${r.stderr}`);
  return JSON.parse(line).result;
}

/** The results of a `multi` job (test/fixtures/dist-worker.ts), in the order of its TEST_RUNS; throws like rankResult. */
export function rankResults(r: RankRun): any[] {
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('{'));
  if (!lines.length) throw new Error(`rank ${r.rank} printed no result (exit ${r.code}): ${r.stderr}`);
  const out: any[] = [];
  for (const l of lines) {
    const x = JSON.parse(l);
    out[x.run ?? 0] = x.result;
  }
  return out;
}

/** Runs several result scenarios one after the other in one world of `world` ranks (scenario `multi`). */
export function runMany(
  world: number,
  runs: { scenario: string; env?: Record<string, string> }[],
  extraEnv: Record<string, string> = {},
): Promise<RankRun[]> {
  return runRanks('multi', world, { ...extraEnv, TEST_RUNS: JSON.stringify(runs) });
}
