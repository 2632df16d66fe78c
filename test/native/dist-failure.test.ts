/**
 * Failure handling of c10d process groups (Gloo, 2 ranks on 127.0.0.1): when one rank dies, is
 * killed, or throws, the other exits non-zero within 60 s with a message naming the failed rank;
 * SIGINT (Ctrl-C) stops every rank with exit code 130. Heartbeat timeout 4 s in these runs. The
 * five 2-rank jobs start together (each on its own port) and each test checks its own: most of
 * their time is spent waiting for a timeout, which they then wait for at the same time.
 */
import { distUnavailable, runRanks, type RankRun } from '../helpers/dist-ranks';
import { skipIf } from '../helpers/skip';

// Skipped, with the reason in the test name, when the torch addon lacks process groups.
const skipReason = distUnavailable();
const d = skipIf(skipReason).describe;

/** Ctrl-C: both ranks get SIGINT half a second after both printed "ready". */
function interruptWhenReady(): Promise<RankRun[]> {
  let ready = 0;
  return runRanks('loop', 2, {}, (_rank, text, kill) => {
    ready += (text.match(/ready \d/g) ?? []).length;
    if (ready === 2) {
      ready = -1;
      setTimeout(() => {
        kill(0, 'SIGINT');
        kill(1, 'SIGINT');
      }, 500);
    }
  });
}

/**
 * A job whose survivor's exit is timed from the moment both ranks had joined (their "ready"
 * lines; the kill follows at once), not from the spawn: start-up under load is not detection time.
 */
function timedFromReady(scenario: string): Promise<{ runs: RankRun[]; msAfterReady: number }> {
  let ready = 0;
  let readyAt = 0;
  const spawned = Date.now();
  return runRanks(scenario, 2, {}, (_rank, text) => {
    ready += (text.match(/ready \d/g) ?? []).length;
    if (ready >= 1 && !readyAt) readyAt = Date.now();
  }).then((runs) => ({ runs, msAfterReady: Math.max(...runs.map((r) => r.ms)) - (readyAt - spawned) }));
}

d('a failed rank stops every rank with a message naming it', () => {
  let jobs: Record<string, Promise<RankRun[]>>;
  let timed: Record<string, Promise<{ runs: RankRun[]; msAfterReady: number }>>;
  beforeAll(() => {
    timed = { 'kill-1': timedFromReady('kill-1'), 'kill-0': timedFromReady('kill-0') };
    jobs = {
      'throw-1': runRanks('throw-1', 2),
      'hang-1': runRanks('hang-1', 2, { TEST_TIMEOUT: '3', TEST_HB_TIMEOUT: '2' }),
      sigint: interruptWhenReady(),
    };
  });

  it('rank 1 killed (SIGKILL): rank 0 exits 1 naming rank 1 within 60 s', async () => {
    const { runs, msAfterReady } = await timed['kill-1'];
    const [r0, r1] = runs;
    expect(r1.signal).toBe('SIGKILL');
    expect(r0.code).toBe(1);
    expect(r0.stderr).toMatch(
      /rank 0 of 2: .*rank 1 failed: no heartbeat for \d+\.\d s \(the process was killed, crashed or is unreachable\)/,
    );
    expect(msAfterReady).toBeLessThan(60000);
  }, 90000);

  it('rank 0 (the store host) killed: rank 1 exits 1 naming rank 0 within 60 s', async () => {
    const { runs, msAfterReady } = await timed['kill-0'];
    const [r0, r1] = runs;
    expect(r0.signal).toBe('SIGKILL');
    expect(r1.code).toBe(1);
    expect(r1.stderr).toMatch(
      /rank 1 of 2: .*rank 0 failed: the rendezvous store it hosts at 127\.0\.0\.1:\d+ is unreachable/,
    );
    expect(msAfterReady).toBeLessThan(60000);
  }, 90000);

  it('rank 1 throws: it exits 1 with its error, rank 0 exits 1 quoting it', async () => {
    const [r0, r1] = await jobs['throw-1'];
    expect(r1.code).toBe(1);
    expect(r1.stderr).toMatch(/worker error: {2}reward model exploded/);
    expect(r0.code).toBe(1);
    expect(r0.stderr).toMatch(/rank 1 failed: reward model exploded/);
  }, 90000);

  it('rank 1 alive but stuck: rank 0 times out and names it as behind', async () => {
    const [r0] = await jobs['hang-1'];
    expect(r0.code).toBe(1);
    expect(r0.stderr).toMatch(
      /rank 0 of 2: allreduce failed: rank 1 failed: did not join in time \(this rank is at collective #\d+; rank 1 is at collective #\d+\)/,
    );
  }, 90000);

  it('SIGINT to every rank (Ctrl-C) stops all of them cleanly with exit 130', async () => {
    const runs = await jobs.sigint;
    for (const r of runs) {
      expect(r.code).toBe(130);
      expect(r.stderr).toMatch(new RegExp(`rank ${r.rank} of 2: stopped by SIGINT`));
    }
  }, 90000);
});
