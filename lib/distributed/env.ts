/**
 * The launch environment contract of a distributed run, read the way torch.distributed's `env://`
 * rendezvous reads it: torchrun (and `crpo train --nproc N`) set MASTER_ADDR, MASTER_PORT, RANK,
 * WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE; srun sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and
 * the node list, whose first host is the master. RANK/WORLD_SIZE win over Slurm's variables, so
 * `srun torchrun ...` works as it does for PyTorch.
 */
import { CrpoError, outOfRange } from '../errors';

export type LaunchSource = 'torchrun' | 'crpo' | 'env' | 'slurm' | 'single';

export interface DistEnv {
  /** Who set the variables: torchrun, crpo's own launcher, plain RANK/WORLD_SIZE, srun, or nobody. */
  source: LaunchSource;
  rank: number;
  worldSize: number;
  /** Rank on this node: picks the GPU (cuda:<localRank % devices>). */
  localRank: number;
  localWorldSize: number;
  /** Node index when known (GROUP_RANK, SLURM_NODEID). */
  nodeRank: number;
  masterAddr: string;
  masterPort: number;
  /** torchrun's agent hosts the TCPStore (TORCHELASTIC_USE_AGENT_STORE=True): every rank is a client. */
  agentStore: boolean;
  /** torchrun restart attempt (TORCHELASTIC_RESTART_COUNT); store keys are scoped by it. */
  restartCount: number;
}

/** The default TCPStore port, as in torch.distributed. */
export const DEFAULT_MASTER_PORT = 29500;

type Env = Record<string, string | undefined>;

function readInt(env: Env, name: string, min: number, max: number): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  const v = Number(raw.trim());
  if (!/^\s*-?\d+\s*$/.test(raw) || !Number.isSafeInteger(v) || v < min || v > max) {
    throw outOfRange(`${name} (environment variable)`, `an integer in [${min}, ${max}]`, raw, 'dist');
  }
  return v;
}

/**
 * Expands a Slurm host list: "node[01-03,07],gpu-a[1-2]-x" -> node01 node02 node03 node07 gpu-a1-x
 * gpu-a2-x. Zero padding of a range is kept; several bracket groups in one name multiply.
 */
export function expandSlurmNodelist(list: string): string[] {
  const entries: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of list.trim()) {
    if (ch === '[') depth++;
    if (ch === ']') depth--;
    if (depth < 0) throw bad(list, 'a "]" without "["');
    if (ch === ',' && depth === 0) {
      entries.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (depth !== 0) throw bad(list, 'an unclosed "["');
  entries.push(cur);
  const out: string[] = [];
  for (const e of entries) {
    const name = e.trim();
    if (name === '') continue;
    out.push(...expandOne(name, list));
  }
  if (out.length === 0) throw bad(list, 'no host names');
  return out;
}

function bad(list: string, why: string): CrpoError {
  return new CrpoError('ERR_CRPO_DIST_ENV', `Cannot read the Slurm node list '${list}': ${why}`, { op: 'dist' });
}

function expandOne(name: string, list: string): string[] {
  const open = name.indexOf('[');
  if (open < 0) return [name];
  const close = name.indexOf(']', open);
  const prefix = name.slice(0, open);
  const body = name.slice(open + 1, close);
  const rest = expandOne(name.slice(close + 1), list);
  const values: string[] = [];
  for (const part of body.split(',')) {
    const m = /^(\d+)(?:-(\d+))?(?::(\d+))?$/.exec(part.trim());
    if (!m) throw bad(list, `'${part}' is not a number or a range like 01-04`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    const step = m[3] === undefined ? 1 : Number(m[3]);
    if (hi < lo || step < 1) throw bad(list, `'${part}' is an empty range`);
    if ((hi - lo) / step > 100000) throw bad(list, `'${part}' has more than 100000 hosts`);
    const width = m[1].length;
    for (let v = lo; v <= hi; v += step) values.push(String(v).padStart(width, '0'));
  }
  const out: string[] = [];
  for (const v of values) for (const r of rest) out.push(prefix + v + r);
  return out;
}

/** The first host of a Slurm node list (the master of an srun-launched job). */
export function firstSlurmHost(list: string): string {
  return expandSlurmNodelist(list)[0];
}

/** SLURM_TASKS_PER_NODE style "4(x2),3": the count of the first node. */
function firstTaskCount(v: string | undefined): number | undefined {
  if (!v) return undefined;
  const m = /^(\d+)/.exec(v.trim());
  return m ? Number(m[1]) : undefined;
}

/**
 * Reads the environment of this process. Without any launcher variables it is a single process
 * (rank 0 of 1). Throws ERR_CRPO_OUT_OF_RANGE / ERR_CRPO_DIST_ENV naming the variable and value.
 */
export function parseDistEnv(env: Env = process.env): DistEnv {
  const hasTorch = env.RANK !== undefined && env.RANK !== '' && env.WORLD_SIZE !== undefined && env.WORLD_SIZE !== '';
  const hasSlurm = env.SLURM_PROCID !== undefined && env.SLURM_NTASKS !== undefined;
  if (hasTorch) {
    const worldSize = readInt(env, 'WORLD_SIZE', 1, 1 << 20)!;
    const rank = readInt(env, 'RANK', 0, worldSize - 1)!;
    const localWorldSize = readInt(env, 'LOCAL_WORLD_SIZE', 1, worldSize) ?? worldSize;
    const localRank = readInt(env, 'LOCAL_RANK', 0, Math.max(0, localWorldSize - 1)) ?? rank % localWorldSize;
    const source: LaunchSource = env.CRPO_LAUNCHER
      ? 'crpo'
      : env.TORCHELASTIC_RUN_ID !== undefined
        ? 'torchrun'
        : 'env';
    if (worldSize > 1 && !env.MASTER_ADDR) {
      throw new CrpoError(
        'ERR_CRPO_DIST_ENV',
        `RANK=${rank} and WORLD_SIZE=${worldSize} are set but MASTER_ADDR is not: set MASTER_ADDR and MASTER_PORT to rank 0's address and a free port (torchrun and crpo --nproc set them)`,
        { op: 'dist' },
      );
    }
    return {
      source,
      rank,
      worldSize,
      localRank,
      localWorldSize,
      nodeRank: readInt(env, 'GROUP_RANK', 0, 1 << 20) ?? 0,
      masterAddr: env.MASTER_ADDR || '127.0.0.1',
      masterPort: readInt(env, 'MASTER_PORT', 1, 65535) ?? DEFAULT_MASTER_PORT,
      agentStore: env.TORCHELASTIC_USE_AGENT_STORE === 'True',
      restartCount: readInt(env, 'TORCHELASTIC_RESTART_COUNT', 0, 1 << 20) ?? 0,
    };
  }
  if (hasSlurm) {
    const worldSize = readInt(env, 'SLURM_NTASKS', 1, 1 << 20)!;
    const rank = readInt(env, 'SLURM_PROCID', 0, worldSize - 1)!;
    const localRank = readInt(env, 'SLURM_LOCALID', 0, 1 << 20) ?? 0;
    const nodelist = env.SLURM_JOB_NODELIST || env.SLURM_NODELIST || env.SLURM_STEP_NODELIST;
    let masterAddr = env.MASTER_ADDR;
    if (!masterAddr) {
      if (!nodelist) {
        if (worldSize > 1) {
          throw new CrpoError(
            'ERR_CRPO_DIST_ENV',
            'SLURM_PROCID and SLURM_NTASKS are set but neither MASTER_ADDR nor SLURM_JOB_NODELIST/SLURM_NODELIST is: cannot find the master host',
            { op: 'dist' },
          );
        }
        masterAddr = '127.0.0.1';
      } else masterAddr = firstSlurmHost(nodelist);
    }
    // One port per job, so that jobs sharing a node do not collide (MASTER_PORT overrides).
    const jobId = readInt(env, 'SLURM_JOB_ID', 0, Number.MAX_SAFE_INTEGER);
    const masterPort =
      readInt(env, 'MASTER_PORT', 1, 65535) ?? (jobId === undefined ? DEFAULT_MASTER_PORT : 15000 + (jobId % 50000));
    return {
      source: 'slurm',
      rank,
      worldSize,
      localRank,
      localWorldSize:
        firstTaskCount(env.SLURM_NTASKS_PER_NODE) ?? firstTaskCount(env.SLURM_TASKS_PER_NODE) ?? worldSize,
      nodeRank: readInt(env, 'SLURM_NODEID', 0, 1 << 20) ?? 0,
      masterAddr,
      masterPort,
      agentStore: false,
      restartCount: 0,
    };
  }
  return {
    source: 'single',
    rank: 0,
    worldSize: 1,
    localRank: 0,
    localWorldSize: 1,
    nodeRank: 0,
    masterAddr: env.MASTER_ADDR || '127.0.0.1',
    masterPort: readInt(env, 'MASTER_PORT', 1, 65535) ?? DEFAULT_MASTER_PORT,
    agentStore: false,
    restartCount: 0,
  };
}
