/**
 * How many intra-op threads libtorch gets: `OMP_NUM_THREADS` when set (what every PyTorch user and
 * torchrun set), then crpo's own `CRPO_NUM_THREADS`, then all the cores (libtorch's own default
 * on Debian is half of them). lib/native.ts applies it when the torch addon loads; ranks sharing a
 * machine with neither variable set split the cores (lib/distributed/process-group.ts); `crpo doctor`
 * reports the count and where it came from.
 */
import * as os from 'os';
import { CrpoError } from './errors';

export type ThreadSource = 'OMP_NUM_THREADS' | 'CRPO_NUM_THREADS' | 'cores';

export interface ThreadSetting {
  threads: number;
  /** Which variable decided it ('cores': neither was set). */
  source: ThreadSource;
}

/**
 * A thread-count variable: unset or empty gives undefined; OpenMP's list form `4,2` (one count
 * per nesting level) gives its first entry, as the outermost level is the one libtorch uses.
 */
function parseCount(name: ThreadSource, value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const first = value.split(',')[0].trim();
  if (!/^[0-9]+$/.test(first) || Number(first) < 1) {
    const fix = `set it to a positive integer (e.g. ${name}=4) or unset it`;
    throw new CrpoError('ERR_CRPO_THREADS', `${name}='${value}' is not a thread count: ${fix}`);
  }
  return Number(first);
}

/** The intra-op thread count for `env` on a machine with `cores` cores (see the file comment). */
export function resolveTorchThreads(
  env: Record<string, string | undefined> = process.env,
  cores = os.cpus().length,
): ThreadSetting {
  const omp = parseCount('OMP_NUM_THREADS', env.OMP_NUM_THREADS);
  const crpo = parseCount('CRPO_NUM_THREADS', env.CRPO_NUM_THREADS);
  if (omp !== undefined) return { threads: omp, source: 'OMP_NUM_THREADS' };
  if (crpo !== undefined) return { threads: crpo, source: 'CRPO_NUM_THREADS' };
  return { threads: Math.max(1, cores), source: 'cores' };
}
