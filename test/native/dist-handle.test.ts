/**
 * The ProcessGroup handle in one process (a real 1-rank Gloo group on 127.0.0.1): argument checks
 * with the standard messages, native checks, collectives on one rank, dispose() and the live-handle
 * and live-group counts that leak tests rely on.
 */
import { liveHandleCount } from '../../lib/native';
import {
  ProcessGroup,
  availableBackends,
  liveProcessGroups,
  PROCESS_GROUP_DEFAULTS,
} from '../../lib/distributed/process-group';
import { parseDistEnv } from '../../lib/distributed/env';
import { freePort } from '../../lib/distributed/launch';
import { distUnavailable } from '../helpers/dist-ranks';
import { skipIf } from '../helpers/skip';

const skipReason = distUnavailable();
const d = skipIf(skipReason).describe;

d('ProcessGroup handle (1 rank)', () => {
  let pg: ProcessGroup;
  const handles0 = liveHandleCount();

  beforeAll(async () => {
    const port = await freePort();
    pg = await ProcessGroup.init({
      env: parseDistEnv({ RANK: '0', WORLD_SIZE: '1', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) }),
      onPeerFailure: 'none',
      heartbeatTimeoutSeconds: 5,
    });
  });

  it('describes itself', () => {
    expect([pg.rank, pg.worldSize, pg.localRank, pg.backend, pg.device]).toEqual([0, 1, 0, 'gloo', 'cpu']);
    expect(liveHandleCount()).toBe(handles0 + 1);
    expect(liveProcessGroups()).toBeGreaterThanOrEqual(1);
    expect(PROCESS_GROUP_DEFAULTS.bucketMb).toBe(25);
  });

  it('collectives on one rank keep the values; stats count them', async () => {
    const a = Float32Array.from([1, 2, 3]);
    const b = Float64Array.from([0.5]);
    const before = pg.commStats();
    await pg.allReduce([a, b], 'mean');
    await pg.broadcast(a, 0);
    await pg.barrier();
    expect(Array.from(a)).toEqual([1, 2, 3]);
    expect(Array.from(b)).toEqual([0.5]);
    const after = pg.commStats();
    expect(after.calls - before.calls).toBe(2);
    expect(after.bytes - before.bytes).toBe(3 * 4 + 8 + 3 * 4);
    expect(pg.failure()).toBeNull();
  });

  it('rejects bad arguments with the standard messages', () => {
    expect(() => pg.allReduce([new Int32Array(2) as unknown as Float32Array])).toThrow(
      'Expected a Float32Array or Float64Array for data[0] but received Int32Array(2)',
    );
    expect(() => pg.allReduce(new Float32Array(1), 'prod' as 'sum')).toThrow(
      "Expected 'sum', 'mean', 'max' or 'min' for op but received 'prod' of type string",
    );
    expect(() => pg.broadcast(new Float32Array(1), 1)).toThrow(
      'Expected an integer in [0, 0] for root but received 1 of type number',
    );
    expect(() => pg.allReduce(new Float32Array(1), 'sum', { bucketMb: -1 })).toThrow(
      'Expected a number >= 0 for bucketMb but received -1 of type number',
    );
  });

  it('init rejects bad options before any network work', async () => {
    const env = parseDistEnv({});
    await expect(ProcessGroup.init({ env, heartbeatIntervalSeconds: 2, heartbeatTimeoutSeconds: 1 })).rejects.toThrow(
      'Expected a number > heartbeatIntervalSeconds (2) for heartbeatTimeoutSeconds but received 1 of type number',
    );
    await expect(ProcessGroup.init({ env, backend: 'mpi' as 'gloo' })).rejects.toThrow(
      "Expected 'auto', 'gloo' or 'nccl' for backend but received 'mpi' of type string",
    );
    await expect(ProcessGroup.init({ env, timeoutSeconds: 0 })).rejects.toThrow(
      'Expected a number > 0 for timeoutSeconds but received 0 of type number',
    );
  });

  // A CUDA build has NCCL: the message below is only for CPU-only builds.
  skipIf(skipReason || (availableBackends().includes('nccl') && 'this libtorch has NCCL')).it(
    'nccl without a CUDA build is a clear error',
    async () => {
      const port = await freePort();
      const env = parseDistEnv({ RANK: '0', WORLD_SIZE: '1', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) });
      const err = await ProcessGroup.init({ env, backend: 'nccl' }).catch((e) => e);
      expect(err.code).toBe('ERR_CRPO_DIST_BACKEND');
      expect(err.message).toBe("backend 'nccl' needs a CUDA build of libtorch with NCCL; this addon has only 'gloo'");
    },
  );

  it('dispose() frees the group; using it afterwards is an error', async () => {
    const groups = liveProcessGroups();
    await pg.close();
    expect(liveHandleCount()).toBe(handles0);
    expect(liveProcessGroups()).toBe(groups - 1);
    expect(() => pg.barrier()).toThrow('ProcessGroup.barrier was used after dispose()');
    pg.dispose(); // idempotent
    expect(liveHandleCount()).toBe(handles0);
  });
});
