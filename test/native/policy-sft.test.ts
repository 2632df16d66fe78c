/**
 * `crpo sft` plumbing on a very small run (lib/train/sft.ts): it trains, evaluates with the paired
 * metrics, writes the report, predictions and a loadable checkpoint, and --resume continues from
 * the saved step instead of starting over. (Accuracy itself is measured by running `crpo sft`;
 * see docs/model.md.)
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadCheckpoint, livePolicies } from '../../lib/model';
import { runSft } from '../../lib/train/sft';
import { itWithNativePolicy } from '../helpers/native-policy';

const maybe = itWithNativePolicy('policy sft tests');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-sft-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

maybe('runs, reports Acc / P-Acc, saves a loadable checkpoint, resumes', async () => {
  const out = path.join(tmp, 'run');
  const progress: number[] = [];
  const r = await runSft({
    out,
    data: 'fixed',
    pairs: 4,
    testPairs: 2,
    epochs: 2,
    batchSize: 8,
    saveEvery: 2,
    maxSeconds: 0,
    onProgress: (p) => progress.push(p.step),
  });
  // 4 categories x 4 pairs x 2 members = 32 clips -> 4 steps per epoch.
  expect(r.trainItems).toBe(32);
  expect(r.steps).toBe(8);
  expect(progress).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  expect(r.testItems).toBe(16);
  const all = r.metrics.groups.all!;
  expect(all.n_samples).toBe(16);
  expect(all.acc).toBeGreaterThanOrEqual(0);
  expect(r.chanceAcc).toBeGreaterThan(0.2);
  const saved = JSON.parse(fs.readFileSync(path.join(out, 'sft-report.json'), 'utf8'));
  expect(saved.steps).toBe(8);
  const lines = fs.readFileSync(path.join(out, 'sft-test-predictions.jsonl'), 'utf8').trim().split('\n');
  expect(lines).toHaveLength(16);
  // Each prediction keeps the model's own text, so seeing errors (the wrong words) and reading
  // errors (the right words, the wrong letter) can be told apart.
  for (const l of lines) expect(typeof JSON.parse(l).text).toBe('string');
  const { policy, manifest } = await loadCheckpoint(r.checkpoint);
  expect(manifest.step).toBe(8);
  policy.dispose();
  // Resume with more epochs: continues at step 8, not 0.
  const resumed: number[] = [];
  const r2 = await runSft({
    out,
    data: 'fixed',
    pairs: 4,
    testPairs: 2,
    epochs: 3,
    batchSize: 8,
    saveEvery: 0,
    maxSeconds: 0,
    resume: true,
    onProgress: (p) => resumed.push(p.step),
  });
  expect(resumed).toEqual([9, 10, 11, 12]);
  expect(r2.steps).toBe(12);
  expect(livePolicies()).toBe(0);
});

maybe(
  'streams fresh pairs: both members or originals only, a second phase from --init, per-attribute report',
  async () => {
    const out = path.join(tmp, 'stream');
    const r = await runSft({ out, steps: 3, batchSize: 8, testPairs: 3, saveEvery: 0, maxSeconds: 0 });
    expect(r.steps).toBe(3);
    expect(r.trainItems).toBe(24);
    expect(Object.keys(r.staticAttributes).sort()).toEqual(['colour', 'count', 'shape']);
    for (const v of Object.values(r.staticAttributes)) expect(v).toBeGreaterThanOrEqual(0);
    expect(r.colourShortcut === null || (r.colourShortcut >= 0 && r.colourShortcut <= 1)).toBe(true);
    const phase2 = path.join(tmp, 'stream-2');
    const r2 = await runSft({
      out: phase2,
      init: out,
      steps: 2,
      batchSize: 4,
      testPairs: 2,
      members: 'original',
      colour: 'shortcut',
      shortcutP: 1,
      saveEvery: 0,
      maxSeconds: 0,
    });
    expect(r2.steps).toBe(2);
    const { policy: loaded, manifest } = await loadCheckpoint(r2.checkpoint);
    loaded.dispose();
    // The weights of the first phase, fresh AdamW moments; the optimizer's step count continues
    // (3 + 2), so bias correction is already ~1 and the first updates of the phase are small.
    expect(manifest.step).toBe(5);
    // A model option that the loaded policy does not have is refused, not ignored; so is the
    // vision attribute loss for a policy without the head.
    const noHead = { out: path.join(tmp, 'bad'), steps: 1, batchSize: 4, testPairs: 1, maxSeconds: 0 };
    await expect(runSft({ ...noHead, init: out, model: { optionSlots: 3 } })).rejects.toThrow(
      /only shapes a fresh policy.*model\.optionSlots/,
    );
    const plain = path.join(tmp, 'plain');
    await runSft({ ...noHead, out: plain, visionAux: 0, model: { visionAuxClasses: 0 } });
    await expect(runSft({ ...noHead, init: plain })).rejects.toThrow(/without a vision attribute head.*visionAux/);
    await expect(
      runSft({ out: path.join(tmp, 'bad'), init: path.join(tmp, 'nothing-here'), steps: 1, maxSeconds: 0 }),
    ).rejects.toThrow(/init/);
    await expect(runSft({ out: path.join(tmp, 'bad'), steps: 0, maxSeconds: 0 })).rejects.toThrow(/steps/);
    expect(livePolicies()).toBe(0);
  },
);
