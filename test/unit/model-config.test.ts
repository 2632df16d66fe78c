/**
 * lib/model/config.ts resolvePolicyConfig: the vision stem's stride-2 convolution is refused where
 * it cannot work (no stem to follow, an odd patch side), with the field named.
 */
import { resolvePolicyConfig } from '../../lib/model/config';

describe('policy config: visionStemDown', () => {
  it('is off in both presets and accepted after a stem with an even patch side', () => {
    expect(resolvePolicyConfig({ preset: 'tiny', vocabSize: 50 }, 'test').visionStemDown).toBe(0);
    expect(resolvePolicyConfig({ preset: 'small', vocabSize: 50 }, 'test').visionStemDown).toBe(0);
    const c = resolvePolicyConfig({ preset: 'tiny', vocabSize: 50, visionStem: 16, visionStemDown: 16 }, 'test');
    expect([c.visionStem, c.visionStemDown, c.patchSize]).toEqual([16, 16, 8]);
  });

  it('is refused without a stem, with an odd patch side, or out of range', () => {
    expect(() => resolvePolicyConfig({ vocabSize: 50, visionStemDown: 8 }, 'test')).toThrow(
      /0 when visionStem is 0 .*for config\.visionStemDown/,
    );
    expect(() =>
      resolvePolicyConfig({ vocabSize: 50, visionStem: 4, visionStemDown: 8, patchSize: 5, imageSize: 40 }, 'test'),
    ).toThrow(/even .*for config\.patchSize/);
    expect(() => resolvePolicyConfig({ vocabSize: 50, visionStem: 4, visionStemDown: 300 }, 'test')).toThrow(
      /config\.visionStemDown/,
    );
    expect(() => resolvePolicyConfig({ vocabSize: 50, visionStem: 4, visionStemDown: 1.5 }, 'test')).toThrow(
      /config\.visionStemDown/,
    );
  });
});
