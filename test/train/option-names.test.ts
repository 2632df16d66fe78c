/**
 * One name per concept across the layers (docs/architecture.md "Names stay the same across layers"):
 * the clip range is clipLow / clipHigh from the trainer's config down to the native loss; the
 * former names epsLow / epsHigh are still accepted by the native policy's options (deprecated),
 * and give the same loss.
 */
import { withClipNames, type PolicyLossOptions } from '../../lib/algo/loss';
import { nativePolicyLoss } from '../../lib/model';
import { itWithNativePolicy } from '../helpers/native-policy';

const maybe = itWithNativePolicy('option names');

describe('clip range names', () => {
  it('withClipNames turns the deprecated names into clipLow / clipHigh; the new names win', () => {
    expect(withClipNames({ epsLow: 0.1, epsHigh: 0.3, beta: 1 })).toEqual({ clipLow: 0.1, clipHigh: 0.3, beta: 1 });
    expect(withClipNames({ clipLow: 0.2, epsLow: 0.1 })).toEqual({ clipLow: 0.2 });
    const none: PolicyLossOptions = { beta: 0 };
    expect(withClipNames(none)).toEqual({ beta: 0 });
  });

  maybe('the native loss gives the same result under either name', () => {
    const inputs = {
      logprobs: Float32Array.from([-1, -0.5, -2, -0.1]),
      oldLogprobs: Float32Array.from([-1.4, -0.2, -1.5, -0.3]),
      advantages: Float32Array.from([1, -1]),
      mask: Float32Array.from([1, 1, 1, 0]),
      rows: 2,
      width: 2,
    };
    const now = nativePolicyLoss(inputs, { clipLow: 0.1, clipHigh: 0.15 });
    const old = nativePolicyLoss(inputs, { epsLow: 0.1, epsHigh: 0.15 });
    const wide = nativePolicyLoss(inputs, { clipLow: 0.5, clipHigh: 0.5 });
    expect(old).toEqual(now);
    expect(wide.loss).not.toBe(now.loss); // the clip range reaches the native loss
  });
});
