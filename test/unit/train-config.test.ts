/**
 * The trainer config (lib/train/config.ts): defaults, file + flag + dotted overrides, one clear
 * message for each bad config, the saved resolved config, and the learning-rate schedules.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import YAML from 'yaml';
import {
  COMPLETION_TOKENS_BY_KIND,
  learningRate,
  resolveConfig,
  saveResolvedConfig,
  TRAIN_DEFAULTS,
} from '../../lib/train/config';
import { overridesFromArgv } from '../../lib/cli/commands/train';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-train-config-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function rejects(overrides: Record<string, unknown>): string {
  try {
    resolveConfig({ overrides });
  } catch (err) {
    expect((err as { code?: string }).code).toBe('ERR_CRPO_CONFIG');
    return (err as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(overrides)}`);
}

describe('resolveConfig', () => {
  it('returns the defaults when nothing is given (completion length resolved by policy kind)', () => {
    expect(TRAIN_DEFAULTS.maxNewTokens).toBe(0);
    expect(resolveConfig()).toEqual({ ...TRAIN_DEFAULTS, maxNewTokens: COMPLETION_TOKENS_BY_KIND.linear });
  });

  it('sizes completions by policy kind unless maxNewTokens is given', () => {
    // The native policy answers `<option words> <answer> X </answer> <eos>`: up to 10 tokens on DyBench,
    // which a length of 2 cuts off.
    expect(resolveConfig({ overrides: { policy: { kind: 'native' } } }).maxNewTokens).toBe(12);
    expect(resolveConfig({ overrides: { policy: { kind: 'qwen' } } }).maxNewTokens).toBe(32);
    expect(resolveConfig({ overrides: { policy: { kind: 'linear' } } }).maxNewTokens).toBe(2);
    expect(resolveConfig({ overrides: { policy: { kind: 'native' }, maxNewTokens: 9 } }).maxNewTokens).toBe(9);
    expect(rejects({ maxNewTokens: -1 })).toMatch(/maxNewTokens/);
  });

  it('applies a YAML file, then flags, then dotted --set pairs', () => {
    const file = path.join(tmp, 'x.yaml');
    fs.writeFileSync(file, 'algo: grpo\ngroupSize: 4\nweights:\n  crr: 2\ndata:\n  pairs: 10\n');
    const o = overridesFromArgv({
      'group-size': 6,
      set: ['weights.behave=0.5', 'data.valPairs=3', 'nullOption=false'],
      init: '',
    });
    const c = resolveConfig({ file, overrides: o });
    expect(c).toMatchObject({
      algo: 'grpo',
      groupSize: 6,
      weights: { accuracy: 1, format: 1, crr: 2, behave: 0.5 },
      data: { pairs: 10, valPairs: 3 },
      nullOption: false,
    });
  });

  it('reads JSON files too', () => {
    const file = path.join(tmp, 'x.json');
    fs.writeFileSync(file, JSON.stringify({ algo: 't-grpo', tgrpo: { mu: 1 } }));
    expect(resolveConfig({ file })).toMatchObject({ algo: 't-grpo', tgrpo: { bonus: 0.3, mu: 1 } });
  });

  it.each([
    [
      { algo: 'ppo' },
      "config: algo: unknown algorithm 'ppo'; known: arrowrl, crpo, crpo-no-dual, grpo, grpo-2g, t-grpo",
    ],
    [
      { groupSize: 1 },
      'config: groupSize: expected an integer >= 2 (G < 2 gives every group zero advantage) but received 1',
    ],
    [{ lr: -0.1 }, 'config: lr: expected a number >= 0 but received -0.1'],
    [
      { data: { train: '/nonexistent/train.jsonl' } },
      'config: data.train: data file not found: /nonexistent/train.jsonl',
    ],
    [{ data: { train: '' } }, "config: data.train: no training data given (a DyBench JSONL path or 'synthetic')"],
    [{ batchsize: 4 }, "config: unknown config key 'batchsize'; see docs/training.md for the fields"],
    [{ data: { trian: 'x' } }, "config: unknown config key 'data.trian'; see docs/training.md for the fields"],
    [
      { aggregation: 'sum' },
      'config: aggregation: expected one of "seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm" but received "sum"',
    ],
    [{ groupSize: 'eight' }, 'config: groupSize: expected a number but received "eight"'],
  ])('rejects %j with one message', (overrides, message) => {
    expect(rejects(overrides)).toBe(message);
  });

  it('names the file in messages about it', () => {
    const file = path.join(tmp, 'bad.yaml');
    fs.writeFileSync(file, 'groupSize: 1\n');
    expect(() => resolveConfig({ file })).toThrow(`${file}: groupSize: expected an integer >= 2`);
    expect(() => resolveConfig({ file: path.join(tmp, 'missing.yaml') })).toThrow(
      `config file not found: ${path.join(tmp, 'missing.yaml')}`,
    );
    fs.writeFileSync(file, '- a\n- b\n');
    expect(() => resolveConfig({ file })).toThrow(`${file}: expected a mapping of config fields at the top level`);
  });

  it('saves the resolved config, which resolves to itself', () => {
    const c = resolveConfig({ overrides: { algo: 'arrowrl', steps: 7 } });
    const file = saveResolvedConfig(c, path.join(tmp, 'run'));
    expect(resolveConfig({ file })).toEqual(c);
    expect(YAML.parse(fs.readFileSync(file, 'utf8')).steps).toBe(7);
  });
});

describe('learningRate', () => {
  const base = { lr: 1, minLrRatio: 0.1, steps: 110, warmupSteps: 10 };
  it('warms up linearly then stays constant', () => {
    expect(learningRate({ ...base, lrSchedule: 'constant' }, 0)).toBeCloseTo(0.1, 12);
    expect(learningRate({ ...base, lrSchedule: 'constant' }, 9)).toBeCloseTo(1, 12);
    expect(learningRate({ ...base, lrSchedule: 'constant' }, 50)).toBe(1);
  });
  it('cosine decays from lr to minLrRatio*lr after warm-up', () => {
    const c = { ...base, lrSchedule: 'cosine' as const };
    expect(learningRate(c, 10)).toBeCloseTo(1, 12);
    expect(learningRate(c, 60)).toBeCloseTo(0.1 + 0.45, 12); // half way: floor + (lr-floor)/2
    expect(learningRate(c, 110)).toBeCloseTo(0.1, 12);
  });
});
