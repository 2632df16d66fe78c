/**
 * `crpo dist check`: joins the c10d process group described by the environment (torchrun, srun,
 * or `--nproc N` for local workers), checks all-reduce (sum, mean, max), broadcast and barrier
 * against values every rank can compute on its own, times an all-reduce of a gradient-sized
 * buffer, and prints one line per rank. Exits non-zero on a wrong value or a failed rank.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Argv } from 'yargs';
import { CrpoError } from '../../errors';
import { initDistributed, runRank, type DistContext } from '../../distributed';
import { launchIfRequested } from '../../distributed/launch';

/** Where Python packages of the installed PyTorch may be (Debian's python3-torch, pip). */
const TORCH_VERSION_FILES = [
  '/usr/lib/python3/dist-packages/torch/version.py',
  '/usr/local/lib/python3/dist-packages/torch/version.py',
];

/** The installed PyTorch version (the one torchrun comes with), read from its version.py; undefined when not found. */
export function installedTorchVersion(files: readonly string[] = TORCH_VERSION_FILES): string | undefined {
  for (const f of files) {
    try {
      const m = /__version__\s*=\s*['"]([^'"]+)['"]/.exec(fs.readFileSync(f, 'utf8'));
      if (m) return m[1];
    } catch {
      /* not there */
    }
  }
  return undefined;
}

/**
 * The torchrun line for the installed torchrun: 1.x spells its flags with underscores
 * (--nproc_per_node, --no_python), 2.x with dashes. The crpo executable is named by its path,
 * since a clone does not put `crpo` on PATH.
 */
export function torchrunLine(version: string | undefined, crpoBin: string, nproc = 2): string {
  const major = version ? Number(version.split('.')[0]) : NaN;
  const flags = major < 2 ? `--no_python --nproc_per_node ${nproc}` : `--no-python --nproc-per-node ${nproc}`;
  return `torchrun ${flags} ${crpoBin} dist check`;
}

export function builder(y: Argv): Argv {
  const version = installedTorchVersion();
  const bin = path.resolve(__dirname, '..', '..', '..', 'bin', 'crpo.js');
  return y
    .usage(
      'crpo dist check [--nproc N] [--size FLOATS]\n\n' +
        `Under torchrun:  ${torchrunLine(version, bin)}\n` +
        `  (${version ? `the installed torchrun is PyTorch ${version}'s` : 'no PyTorch found: the torchrun 2.x spelling'}; ` +
        'torchrun 1.x spells the flags --no_python --nproc_per_node, 2.x --no-python --nproc-per-node; ' +
        'bin/crpo.js is named by its path since a clone does not put crpo on PATH)\n' +
        (version && Number(version.split('.')[0]) < 2
          ? "  (Debian's torchrun 1.13 under Python 3.11 stops before starting any worker, with \"'NoneType' object has " +
            "no attribute 'get'\" in to_map; --nproc 2 starts the same workers without it)\n"
          : '') +
        'Under Slurm:     srun --ntasks 8 crpo dist check\n' +
        'Locally:         crpo dist check --nproc 2',
    )
    .positional('action', { type: 'string', choices: ['check'], describe: 'What to do' })
    .option('nproc', {
      type: 'number',
      describe: 'Start this many local workers (same environment contract as torchrun)',
    })
    .option('size', { type: 'number', default: 1 << 20, describe: 'Floats in the checked and timed all-reduce' })
    .option('iters', { type: 'number', default: 5, describe: 'Timed all-reduce repetitions' })
    .option('backend', { type: 'string', choices: ['auto', 'gloo', 'nccl'], default: 'auto', describe: 'c10d backend' })
    .option('bucket-mb', { type: 'number', default: 25, describe: 'All-reduce bucket size in MiB' })
    .option('timeout', { type: 'number', default: 120, describe: 'Rendezvous and collective timeout, seconds' })
    .option('heartbeat-timeout', {
      type: 'number',
      default: 30,
      describe: 'A rank silent this long is declared failed, seconds',
    });
}

interface Argv2 {
  action: string;
  nproc?: number;
  size: number;
  iters: number;
  backend: 'auto' | 'gloo' | 'nccl';
  bucketMb: number;
  timeout: number;
  heartbeatTimeout: number;
}

function pattern(i: number): number {
  return (i % 7) + 1;
}

async function check(ctx: DistContext, argv: Argv2): Promise<string[]> {
  const n = argv.size;
  const W = ctx.worldSize;
  const failures: string[] = [];
  const expectEq = (what: string, got: ArrayLike<number>, want: (i: number) => number, tol = 0) => {
    for (let i = 0; i < got.length; i++) {
      if (Math.abs(got[i] - want(i)) > tol) {
        failures.push(`${what}: element ${i} is ${got[i]}, expected ${want(i)}`);
        return;
      }
    }
  };
  // sum and mean: rank r contributes (r+1)*pattern(i)
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (ctx.rank + 1) * pattern(i);
  const b = Float32Array.from(a);
  await ctx.allReduce(a, 'sum');
  expectEq('all-reduce sum', a, (i) => ((W * (W + 1)) / 2) * pattern(i));
  await ctx.allReduce(b, 'mean');
  expectEq('all-reduce mean', b, (i) => ((W + 1) / 2) * pattern(i), 1e-5 * 7 * W);
  const m = new Float64Array([ctx.rank, -ctx.rank]);
  await ctx.allReduce(m, 'max');
  expectEq('all-reduce max', m, (i) => (i === 0 ? W - 1 : 0));
  // broadcast from the last rank: a values only it has
  const root = W - 1;
  const c = new Float32Array(n).fill(-1);
  if (ctx.rank === root) for (let i = 0; i < n; i++) c[i] = Math.sin(i) * 100;
  await ctx.broadcast(c, root);
  expectEq('broadcast', c, (i) => Math.fround(Math.sin(i) * 100));
  await ctx.barrier();
  return failures;
}

export async function handler(argv: Argv2): Promise<void> {
  if (argv.action !== 'check')
    throw new CrpoError('ERR_CRPO_USAGE', `Unknown dist action '${argv.action}' (known: check)`);
  if (!Number.isInteger(argv.size) || argv.size < 1)
    throw new CrpoError('ERR_CRPO_USAGE', `Expected an integer >= 1 for --size but received ${argv.size}`);
  if (await launchIfRequested(argv.nproc)) return;
  const t0 = Date.now();
  const ctx = await initDistributed({
    backend: argv.backend,
    bucketMb: argv.bucketMb,
    timeoutSeconds: argv.timeout,
    heartbeatTimeoutSeconds: argv.heartbeatTimeout,
  });
  const joinMs = Date.now() - t0;
  await runRank(ctx, async () => {
    const failures = await check(ctx, argv);
    const buf = new Float32Array(argv.size).fill(1);
    const times: number[] = [];
    for (let i = 0; i < Math.max(1, argv.iters); i++) {
      const s = process.hrtime.bigint();
      await ctx.allReduce(buf, 'mean');
      times.push(Number(process.hrtime.bigint() - s) / 1e6);
    }
    times.sort((x, y) => x - y);
    const med = times[Math.floor(times.length / 2)];
    const mib = (argv.size * 4) / 2 ** 20;
    // Ring all-reduce bus bandwidth, as nccl-tests report it: bytes * 2(W-1)/W / time.
    const busGBs = (argv.size * 4 * 2 * (ctx.worldSize - 1)) / Math.max(1, ctx.worldSize) / (med / 1e3) / 1e9;
    const backend = ctx.group ? `${ctx.group.backend} on ${ctx.group.device}` : 'single process';
    const where = `${ctx.env.source}, master ${ctx.env.masterAddr}:${ctx.env.masterPort}`;
    const status = failures.length
      ? `FAILED: ${failures.join('; ')}`
      : 'all-reduce sum/mean/max, broadcast, barrier: ok';
    process.stdout.write(
      `rank ${ctx.rank}/${ctx.worldSize} (local ${ctx.localRank}, ${backend}, ${where}, joined in ${joinMs} ms): ${status}; ` +
        `all-reduce of ${mib.toFixed(1)} MiB: median ${med.toFixed(2)} ms over ${times.length} (bus ${busGBs.toFixed(2)} GB/s)\n`,
    );
    if (failures.length) throw new CrpoError('ERR_CRPO_DIST_CHECK', `rank ${ctx.rank}: ${failures[0]}`);
  });
}
