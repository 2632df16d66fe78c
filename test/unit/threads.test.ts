/**
 * The intra-op thread count (lib/threads.ts): OMP_NUM_THREADS when set, then CRPO_NUM_THREADS,
 * then the cores; malformed values are refused with the variable and the fix. `crpo doctor`
 * reports the count libtorch actually runs with and where it came from (checked in a child
 * process per environment, since the count is applied when the torch addon loads).
 */
import { spawnSync } from 'child_process';
import * as os from 'os';
import * as path from 'path';
import { formatThreads } from '../../lib/cli/doctor-report';
import { hasAddon } from '../../lib/native';
import { resolveTorchThreads } from '../../lib/threads';
import { skipIf } from '../helpers/skip';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = ['-r', path.join(ROOT, 'scripts/ts-register.js'), path.join(ROOT, 'test/fixtures/eval-cli.js')];
const refusal = (name: string, value: string) =>
  `${name}='${value}' is not a thread count: set it to a positive integer (e.g. ${name}=4) or unset it`;

describe('resolveTorchThreads', () => {
  const OMP = 'OMP_NUM_THREADS';
  const CRPO = 'CRPO_NUM_THREADS';
  test('order: OMP_NUM_THREADS, then CRPO_NUM_THREADS, then the cores', () => {
    expect(resolveTorchThreads({ [OMP]: '3', [CRPO]: '5' }, 8)).toEqual({ threads: 3, source: OMP });
    expect(resolveTorchThreads({ [CRPO]: '5' }, 8)).toEqual({ threads: 5, source: CRPO });
    expect(resolveTorchThreads({}, 8)).toEqual({ threads: 8, source: 'cores' });
  });

  test('an empty variable counts as unset; the list form takes the outermost level', () => {
    expect(resolveTorchThreads({ [OMP]: '', [CRPO]: '2' }, 8)).toEqual({ threads: 2, source: CRPO });
    expect(resolveTorchThreads({ [OMP]: '  ', [CRPO]: '' }, 6)).toEqual({ threads: 6, source: 'cores' });
    expect(resolveTorchThreads({ [OMP]: '4,2' }, 8)).toEqual({ threads: 4, source: OMP });
  });

  test('malformed values are refused with the variable, its value and the fix', () => {
    for (const [name, value] of [
      [OMP, 'abc'],
      [OMP, '0'],
      [CRPO, '-1'],
      [CRPO, '1.5'],
    ]) {
      const want = expect.objectContaining({ code: 'ERR_CRPO_THREADS', message: refusal(name, value) });
      expect(() => resolveTorchThreads({ [name]: value }, 8)).toThrow(want as unknown as Error);
    }
  });

  test('the doctor line names the source', () => {
    const order = 'order: OMP_NUM_THREADS, CRPO_NUM_THREADS, cores), inter-op 1; OPENBLAS_NUM_THREADS=unset';
    const omp = { intraOp: 1, interOp: 1, source: OMP, [OMP]: '1', [CRPO]: '2' } as const;
    expect(formatThreads({ cpus: 2, threads: omp })).toBe(
      `torch intra-op 1 (from OMP_NUM_THREADS=1; CRPO_NUM_THREADS=2 not used; ${order}`,
    );
    expect(formatThreads({ cpus: 2, threads: { intraOp: 2, interOp: 1, source: 'cores' } })).toBe(
      `torch intra-op 2 (the 2 cores: OMP_NUM_THREADS and CRPO_NUM_THREADS unset; ${order}`,
    );
  });
});

const torchSkip = hasAddon('torch') ? undefined : 'the torch addon is not built (npm run build:torch)';
const title = `crpo doctor --json reports libtorch's actual count`;
skipIf(torchSkip).describe(title, () => {
  function doctor(vars: Record<string, string>): { status: number | null; threads: Record<string, unknown> } {
    const env: Record<string, string | undefined> = { ...process.env, ...vars };
    for (const k of ['OMP_NUM_THREADS', 'CRPO_NUM_THREADS']) if (!(k in vars)) delete env[k];
    const options = { cwd: ROOT, env, encoding: 'utf8' as const, timeout: 60000 };
    const r = spawnSync(process.execPath, [...CLI, 'doctor', '--json'], options);
    const out = r.stdout ? (JSON.parse(r.stdout) as { threads: Record<string, unknown> }) : { threads: {} };
    return { status: r.status, threads: out.threads };
  }

  test('OMP_NUM_THREADS wins over CRPO_NUM_THREADS, which wins over the cores', () => {
    // counts chosen to differ from each other and from the cores' count where the machine allows
    const [OMP, CRPO] = ['OMP_NUM_THREADS', 'CRPO_NUM_THREADS'];
    expect(doctor({ [OMP]: '3', [CRPO]: '1' }).threads).toMatchObject({ intraOp: 3, source: OMP });
    expect(doctor({ [CRPO]: '3' }).threads).toMatchObject({ intraOp: 3, source: CRPO });
    expect(doctor({ [OMP]: '1', [CRPO]: '3' }).threads).toMatchObject({ intraOp: 1, source: OMP });
    expect(doctor({}).threads).toMatchObject({ intraOp: os.cpus().length, source: 'cores' });
  }, 120000);

  test('a malformed OMP_NUM_THREADS is reported, not silently replaced', () => {
    const r = doctor({ OMP_NUM_THREADS: 'many' });
    expect(r.threads.error).toBe(refusal('OMP_NUM_THREADS', 'many'));
    expect(r.threads.intraOp).toBeUndefined();
  }, 60000);
});
