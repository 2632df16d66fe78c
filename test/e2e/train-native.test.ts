/**
 * The trainer driving the native libtorch policy (policy.kind 'native', lib/policy/native.ts):
 * a fresh tiny policy takes CRPO steps through the same loop, and a run stopped after a checkpoint
 * and resumed ends with weights bitwise equal to an uninterrupted run (weights, AdamW state,
 * sampling RNG and the frozen reference all come back from the checkpoint). Skipped, with the
 * reason, when the torch addon carries no native policy.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { hasAddon, torchAddon } from '../../lib/native';
import { train } from '../../lib/train/trainer';
import { listCheckpoints } from '../../lib/train/checkpoint';
import { skipIf } from '../helpers/skip';
import { tinyNativeTrainConfig } from '../helpers/native-policy';

const available =
  hasAddon('torch') && typeof (torchAddon() as unknown as { policyCreate?: unknown }).policyCreate === 'function';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-train-native-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

skipIf(!available && 'the torch addon with the native policy is not built').describe(
  'trainer with the native policy',
  () => {
    const config = (out: string, steps: number, resume: string) =>
      tinyNativeTrainConfig(out, {
        steps,
        resume,
        batchSize: 2,
        groupSize: 2,
        maxNewTokens: 6,
        lr: 1e-3,
        saveEvery: 2,
        keepLast: 5,
        seed: 3,
        data: { pairs: 3, valPairs: 1 },
      });
    const weights = (out: string): Buffer => {
      const all = listCheckpoints(out);
      return fs.readFileSync(path.join(all[all.length - 1].dir, 'policy', 'model.safetensors'));
    };

    it('trains through the loop and resumes bitwise', async () => {
      const full = await train(config(path.join(tmp, 'full'), 4, 'never'), { log: () => undefined });
      expect(full.skippedSteps).toBe(0);
      const lines = fs
        .readFileSync(path.join(tmp, 'full', 'metrics.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(lines).toHaveLength(4);
      expect(lines[0].sequences).toBe(2 * 2 * 2); // B x (G + G'), both branches trained
      expect(Number.isFinite(lines[0].grad_norm)).toBe(true);

      const part = path.join(tmp, 'part');
      await train(config(part, 2, 'never'), { log: () => undefined });
      const resumed = await train(config(part, 4, 'auto'), { log: () => undefined });
      expect(resumed.resumedFrom).toMatch(/step-000002$/);
      expect(weights(part).equals(weights(path.join(tmp, 'full')))).toBe(true);
      expect(resumed.digest).toBe(full.digest);
    });
  },
);
