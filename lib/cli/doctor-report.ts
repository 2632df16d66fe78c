/**
 * Environment report behind `crpo doctor`: Node, which addons loaded and from where, libtorch
 * version and path, CUDA, the BLAS library actually mapped into this process, thread counts.
 */
import * as fs from 'fs';
import * as os from 'os';
import { addonStatus, hasAddon, torchInfo, type AddonStatus, type TorchInfo } from '../native';
import { TRAINING_COMMANDS, TRAINING_MALLOC_ENV } from './relaunch';
import { resolveTorchThreads, type ThreadSource } from '../threads';

export interface DoctorReport {
  node: string;
  platform: string;
  cpus: number;
  memoryGiB: number;
  addons: AddonStatus[];
  torch?: TorchInfo & { libraryPath?: string };
  blas: string[];
  threads: {
    intraOp?: number;
    interOp?: number;
    /** Where the intra-op count comes from (lib/threads.ts), or why the variable is refused. */
    source?: ThreadSource;
    error?: string;
    OMP_NUM_THREADS?: string;
    CRPO_NUM_THREADS?: string;
    OPENBLAS_NUM_THREADS?: string;
  };
  ffmpeg?: string;
}

/** Shared libraries of this process whose file name matches `pattern` (Linux /proc/self/maps). */
export function mappedLibraries(pattern: RegExp): string[] {
  try {
    const maps = fs.readFileSync('/proc/self/maps', 'utf8');
    const libs = new Set<string>();
    for (const line of maps.split('\n')) {
      const p = line.slice(line.indexOf('/'));
      if (line.includes('/') && pattern.test(p.split('/').pop() ?? '')) libs.add(fs.realpathSync(p));
    }
    return [...libs];
  } catch {
    return [];
  }
}

export function doctorReport(): DoctorReport {
  const addons = addonStatus();
  const report: DoctorReport = {
    node: process.version,
    platform: `${os.platform()} ${os.arch()} ${os.release()}`,
    cpus: os.cpus().length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    addons,
    blas: [],
    threads: {
      OMP_NUM_THREADS: process.env.OMP_NUM_THREADS,
      CRPO_NUM_THREADS: process.env.CRPO_NUM_THREADS,
      OPENBLAS_NUM_THREADS: process.env.OPENBLAS_NUM_THREADS,
    },
  };
  try {
    report.threads.source = resolveTorchThreads().source;
  } catch (err) {
    report.threads.error = (err as Error).message;
  }
  if (hasAddon('torch')) {
    const info = torchInfo();
    report.torch = {
      ...info,
      libraryPath: mappedLibraries(/^libtorch_cpu\.so/)[0] ?? mappedLibraries(/^libtorch\.so/)[0],
    };
    report.threads.intraOp = info.intraOpThreads;
    report.threads.interOp = info.interOpThreads;
    report.blas = mappedLibraries(/blas|mkl_rt/i);
  }
  return report;
}

/** The threads line: the intra-op count and which of OMP_NUM_THREADS, CRPO_NUM_THREADS, the cores decided it. */
export function formatThreads(r: Pick<DoctorReport, 'threads' | 'cpus'>): string {
  const t = r.threads;
  type Var = 'OMP_NUM_THREADS' | 'CRPO_NUM_THREADS' | 'OPENBLAS_NUM_THREADS';
  const v = (k: Var) => `${k}=${t[k] === undefined || t[k] === '' ? 'unset' : t[k]}`;
  const from = t.error
    ? `refused: ${t.error}`
    : t.source === 'cores'
      ? `the ${r.cpus} cores: OMP_NUM_THREADS and CRPO_NUM_THREADS unset`
      : `from ${v(t.source as Var)}`;
  const unused = t.source === 'OMP_NUM_THREADS' && t.CRPO_NUM_THREADS ? `; ${v('CRPO_NUM_THREADS')} not used` : '';
  const order = 'order: OMP_NUM_THREADS, CRPO_NUM_THREADS, cores';
  const interOp = `inter-op ${t.interOp ?? '-'}`;
  return `torch intra-op ${t.intraOp ?? '-'} (${from}${unused}; ${order}), ${interOp}; ${v('OPENBLAS_NUM_THREADS')}`;
}

export function formatDoctor(r: DoctorReport): string {
  const lines: string[] = [];
  lines.push(`node        ${r.node} on ${r.platform}, ${r.cpus} CPUs, ${r.memoryGiB} GiB`);
  for (const a of r.addons) {
    lines.push(
      a.loaded ? `addon ${a.name.padEnd(6)}loaded from ${a.path}` : `addon ${a.name.padEnd(6)}MISSING: ${a.error}`,
    );
  }
  if (r.torch) {
    lines.push(`libtorch    ${r.torch.torchVersion} at ${r.torch.libraryPath ?? '(path unknown)'}`);
    lines.push(
      `cuda        ${r.torch.cudaAvailable ? `available, ${r.torch.cudaDeviceCount} device(s)` : 'not available'}; crpo CUDA kernels ${r.torch.cudaKernelsBuilt ? 'built' : 'not built'}`,
    );
    const blas = r.blas.length ? r.blas.join(', ') : 'none mapped';
    const slow = r.blas.some((b) => /\/blas\/libblas/.test(b)) && !r.blas.some((b) => /openblas/.test(b));
    lines.push(
      `blas        ${blas}${slow ? '  (reference BLAS: ~34x slower matmul; apt-get install libopenblas0-pthread)' : ''}`,
    );
    const started = Object.entries(TRAINING_MALLOC_ENV)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
    const own = Object.keys(TRAINING_MALLOC_ENV).filter((k) => process.env[k] !== undefined);
    const relaunch =
      process.env.CRPO_MALLOC === 'default'
        ? 'no relaunch (CRPO_MALLOC=default)'
        : own.length
          ? `no relaunch, the ${own.join(', ')} set here are used`
          : `${[...TRAINING_COMMANDS].join(', ')} run in a child started with ${started}`;
    lines.push(`malloc      ${r.torch.malloc ?? 'unknown (rebuild the torch addon)'}; training commands: ${relaunch}`);
    lines.push(`threads     ${formatThreads(r)}`);
  } else {
    if (r.threads.error) lines.push(`threads     ${r.threads.error}`);
    lines.push(
      'libtorch    not loaded (training unavailable; the core addon still serves data, routing, rewards and evaluation)',
    );
  }
  return lines.join('\n');
}
