/**
 * A run whose sampled answers never parse says so (lib/train/trainer.ts): a warning on the first
 * such step and every tenth, one in the summary, one for a validation with no parsable answer,
 * and the count in the result; so does a step on which every group's rewards were equal. (The linear policy writes an unparsable answer when it may write
 * only one token.)
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { resolveConfig } from '../../lib/train/config';
import { train } from '../../lib/train/trainer';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-invalid-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('every answer invalid: warned per step, in the summary and at validation; counted in the result', async () => {
  const log: string[] = [];
  const c = resolveConfig({
    overrides: {
      out: path.join(tmp, 'run'),
      steps: 3,
      maxNewTokens: 1,
      progress: false,
      plots: false,
      valEvery: 0,
      dumpEvery: 0,
      data: { pairs: 4, valPairs: 2 },
    },
  });
  const r = await train(c, { log: (m) => log.push(m) });
  expect(r.invalidSteps).toBe(3);
  expect(log.filter((l) => /^warning: step \d+: no sampled answer parsed/.test(l))).toHaveLength(1); // step 1 (then every 10th)
  expect(log).toContain('warning: on 3 of 3 steps no sampled answer parsed (format reward 0 for every rollout)');
  // Every reward is the same, so no group has an advantage: said per step (first, then every
  // 10th) and in the summary.
  expect(log.filter((l) => /^warning: step 1: every group's rewards were equal \(1 such step/.test(l))).toHaveLength(1);
  expect(log).toContain("warning: on 3 of 3 steps every group's rewards were equal: no reward signal on those steps");
  expect(log.some((l) => /^warning: validation at step 0: no held-out answer parsed \(maxNewTokens 1\)/.test(l))).toBe(
    true,
  );
  expect(r.validation[0].invalid).toBe(1);
});

test('a run whose answers parse reports no invalid steps', async () => {
  const log: string[] = [];
  const c = resolveConfig({
    overrides: {
      out: path.join(tmp, 'ok'),
      steps: 2,
      progress: false,
      plots: false,
      valEvery: 0,
      dumpEvery: 0,
      data: { pairs: 4, valPairs: 2 },
    },
  });
  const r = await train(c, { log: (m) => log.push(m) });
  expect(r.invalidSteps).toBe(0);
  expect(log.filter((l) => l.startsWith('warning:'))).toEqual([]);
});
