/**
 * Launch environment parsing (lib/distributed/env.ts): torchrun's variables, Slurm's (with node-list
 * expansion for the master host), crpo's own launcher, precedence, and the errors for bad values;
 * plus prompt-group sharding and the local launcher's environment and failure handling.
 */
import { expandSlurmNodelist, firstSlurmHost, parseDistEnv } from '../../lib/distributed/env';
import { promptSeed, shardPromptGroups, shardRange } from '../../lib/distributed';
import { launchLocal, workerEnv } from '../../lib/distributed/launch';

describe('parseDistEnv', () => {
  it('reads what torchrun sets (agent-hosted store)', () => {
    const env = {
      MASTER_ADDR: 'node7',
      MASTER_PORT: '29400',
      RANK: '5',
      WORLD_SIZE: '16',
      LOCAL_RANK: '1',
      LOCAL_WORLD_SIZE: '4',
      GROUP_RANK: '1',
      TORCHELASTIC_RUN_ID: 'none',
      TORCHELASTIC_USE_AGENT_STORE: 'True',
      TORCHELASTIC_RESTART_COUNT: '2',
    };
    expect(parseDistEnv(env)).toEqual({
      source: 'torchrun',
      rank: 5,
      worldSize: 16,
      localRank: 1,
      localWorldSize: 4,
      nodeRank: 1,
      masterAddr: 'node7',
      masterPort: 29400,
      agentStore: true,
      restartCount: 2,
    });
  });

  it('reads what crpo --nproc sets, which is the same contract', () => {
    const e = parseDistEnv(workerEnv(1, 2, '127.0.0.1', 12345, {}));
    expect(e).toMatchObject({
      source: 'crpo',
      rank: 1,
      worldSize: 2,
      localRank: 1,
      masterAddr: '127.0.0.1',
      masterPort: 12345,
      agentStore: false,
    });
  });

  it('a launcher started by the malloc relaunch makes its workers follow it, not its own parent', () => {
    // lib/cli/relaunch.ts: the relaunched child watches CRPO_RELAUNCH_PARENT_PID; a worker's parent is the launcher
    const e = workerEnv(0, 2, '127.0.0.1', 12345, { CRPO_MALLOC_RELAUNCHED: '1', CRPO_RELAUNCH_PARENT_PID: '1234' });
    expect(e.CRPO_RELAUNCH_PARENT_PID).toBe(String(process.pid));
    expect(workerEnv(0, 2, '127.0.0.1', 12345, {}).CRPO_RELAUNCH_PARENT_PID).toBeUndefined();
  });

  it('reads srun: rank, size, local id, first host of the node list, a port per job', () => {
    const env = {
      SLURM_PROCID: '9',
      SLURM_NTASKS: '16',
      SLURM_LOCALID: '1',
      SLURM_NODEID: '2',
      SLURM_JOB_NODELIST: 'gpu-a[007-010,012],gpu-b3',
      SLURM_JOB_ID: '123456',
      SLURM_TASKS_PER_NODE: '4(x4)',
    };
    expect(parseDistEnv(env)).toEqual({
      source: 'slurm',
      rank: 9,
      worldSize: 16,
      localRank: 1,
      localWorldSize: 4,
      nodeRank: 2,
      masterAddr: 'gpu-a007',
      masterPort: 15000 + (123456 % 50000),
      agentStore: false,
      restartCount: 0,
    });
    expect(parseDistEnv({ ...env, MASTER_ADDR: '10.0.0.1', MASTER_PORT: '29500' })).toMatchObject({
      masterAddr: '10.0.0.1',
      masterPort: 29500,
    });
  });

  it('RANK/WORLD_SIZE win over Slurm (srun torchrun ...)', () => {
    const e = parseDistEnv({
      SLURM_PROCID: '0',
      SLURM_NTASKS: '2',
      SLURM_NODELIST: 'n[1-2]',
      RANK: '3',
      WORLD_SIZE: '8',
      MASTER_ADDR: 'n1',
      TORCHELASTIC_RUN_ID: 'x',
    });
    expect(e).toMatchObject({ source: 'torchrun', rank: 3, worldSize: 8 });
  });

  it('no launcher variables: one process', () => {
    expect(parseDistEnv({})).toMatchObject({ source: 'single', rank: 0, worldSize: 1 });
  });

  it('bad values name the variable and the value', () => {
    expect(() => parseDistEnv({ RANK: '2', WORLD_SIZE: '2', MASTER_ADDR: 'x' })).toThrow(
      "Expected an integer in [0, 1] for RANK (environment variable) but received '2' of type string",
    );
    expect(() => parseDistEnv({ RANK: 'one', WORLD_SIZE: '2', MASTER_ADDR: 'x' })).toThrow(
      /for RANK \(environment variable\) but received 'one'/,
    );
    expect(() => parseDistEnv({ RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: 'x', MASTER_PORT: '70000' })).toThrow(
      /an integer in \[1, 65535\] for MASTER_PORT/,
    );
    expect(() => parseDistEnv({ RANK: '0', WORLD_SIZE: '2' })).toThrow(/MASTER_ADDR is not/);
    expect(() => parseDistEnv({ SLURM_PROCID: '0', SLURM_NTASKS: '2' })).toThrow(
      /neither MASTER_ADDR nor SLURM_JOB_NODELIST/,
    );
  });
});

describe('Slurm node lists', () => {
  it('expands ranges, lists, padding, several bracket groups and plain names', () => {
    expect(expandSlurmNodelist('node[01-03,07]')).toEqual(['node01', 'node02', 'node03', 'node07']);
    expect(expandSlurmNodelist('a[1-2]-b[08-09],c')).toEqual(['a1-b08', 'a1-b09', 'a2-b08', 'a2-b09', 'c']);
    expect(expandSlurmNodelist('host1,host2')).toEqual(['host1', 'host2']);
    expect(expandSlurmNodelist('gpu[9-11]')).toEqual(['gpu9', 'gpu10', 'gpu11']);
    expect(firstSlurmHost('gpu-st-p4d-24xlarge-[1-16]')).toBe('gpu-st-p4d-24xlarge-1');
  });

  it('rejects malformed lists with the list in the message', () => {
    expect(() => expandSlurmNodelist('node[1-3')).toThrow(
      'Cannot read the Slurm node list \'node[1-3\': an unclosed "["',
    );
    expect(() => expandSlurmNodelist('node[5-2]')).toThrow(/'5-2' is an empty range/);
    expect(() => expandSlurmNodelist('node[a-b]')).toThrow(/'a-b' is not a number/);
  });
});

describe('sharding by prompt group', () => {
  it('contiguous equal blocks; the global order does not depend on the world size', () => {
    const batch = Array.from({ length: 8 }, (_, i) => ({ prompt: i, branches: ['orig', 'cf'] }));
    const two = [0, 1].flatMap((rank) => shardPromptGroups(batch, { rank, worldSize: 2 }));
    const four = [0, 1, 2, 3].flatMap((rank) => shardPromptGroups(batch, { rank, worldSize: 4 }));
    expect(two).toEqual(batch);
    expect(four).toEqual(batch);
    expect(shardPromptGroups(batch, { rank: 1, worldSize: 4 }).map((g) => g.prompt)).toEqual([2, 3]);
    // a group (both branches) is one item: it is never split across ranks
    expect(shardPromptGroups(batch, { rank: 3, worldSize: 4 })[1].branches).toEqual(['orig', 'cf']);
  });

  it('a global batch that does not divide by the world size is an error', () => {
    expect(() => shardRange(6, 0, 4)).toThrow(
      'Expected a multiple of the world size 4 for global batch (prompts per step) but received 6 of type number',
    );
  });

  it('sampling seeds follow the global prompt index, not the rank', () => {
    expect(promptSeed(1, 3, 5)).toBe(promptSeed(1, 3, 5));
    expect(new Set([0, 1, 2, 3].map((i) => promptSeed(1, 3, i))).size).toBe(4);
    expect(promptSeed(1, 3, 5)).not.toBe(promptSeed(1, 4, 5));
  });
});

describe('local launcher', () => {
  it('gives every worker the torchrun contract and stops the others when one fails', async () => {
    const script = `const r = +process.env.RANK;
      const e = process.env;
      if (e.WORLD_SIZE !== '3' || e.LOCAL_RANK !== String(r) || e.MASTER_ADDR !== '127.0.0.1' || !(+e.MASTER_PORT > 0) || e.CRPO_LAUNCHER !== '1') process.exit(9);
      if (r === 1) process.exit(3);
      process.on('SIGTERM', () => process.exit(143));
      setInterval(() => {}, 1000);`;
    const lines: string[] = [];
    const t0 = Date.now();
    const res = await launchLocal({
      nproc: 3,
      command: process.execPath,
      args: ['-e', script],
      graceSeconds: 0.2,
      killAfterSeconds: 5,
      stdio: 'ignore',
      log: (l) => lines.push(l),
    });
    expect(res.failedRank).toBe(1);
    expect(res.exitCode).toBe(3);
    expect(res.ranks.map((e) => e.code)).toEqual([143, 3, 143]);
    expect(lines[0]).toBe('crpo launch: rank 1 exited with code 3; stopping the other ranks');
    expect(Date.now() - t0).toBeLessThan(10000);
  });

  it('passes SIGINT on to every worker and reports their exit', async () => {
    const { spawn } = await import('child_process');
    const path = await import('path');
    const root = path.resolve(__dirname, '../..');
    const worker = `process.on('SIGINT', () => process.exit(130)); console.log('up'); setInterval(() => {}, 1000);`;
    const launcher = `require(${JSON.stringify(path.join(root, 'lib/distributed/launch.ts'))}).launchLocal({ nproc: 2, command: process.execPath, args: ['-e', ${JSON.stringify(worker)}], killAfterSeconds: 5, log: () => {} })
      .then((r) => { console.log(JSON.stringify(r)); process.exitCode = r.exitCode; });`;
    const child = spawn(process.execPath, ['-r', path.join(root, 'scripts/ts-register.js'), '-e', launcher], {
      cwd: root,
    });
    let out = '';
    let up = 0;
    child.stdout.on('data', (b) => {
      out += b;
      up += (String(b).match(/up/g) ?? []).length;
      if (up === 2) {
        up = -1;
        child.kill('SIGINT'); // to the launcher only, as `kill -INT <launcher>` would
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    const result = JSON.parse(out.trim().split('\n').pop()!);
    expect(result.ranks.map((e: { code: number }) => e.code)).toEqual([130, 130]);
    expect(code).toBe(130);
  }, 30000);

  it('rejects a bad --nproc', async () => {
    await expect(launchLocal({ nproc: 0 })).rejects.toThrow(
      'Expected an integer in [1, 1024] for nproc but received 0 of type number',
    );
  });
});
