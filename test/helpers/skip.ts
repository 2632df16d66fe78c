/**
 * The one way a test skips. A check says why the tests cannot run here (a string), or returns
 * nothing when they can; `skipIf(reason)` then gives a `describe` and an `it` that run as usual,
 * or register skipped tests whose names end in "(skipped: <reason>)". A skipped `describe` does
 * not run its body (the body may read what is missing, e.g. golden files); it registers one
 * skipped test in its place. A skip never counts as a pass: jest reports it as skipped, and
 * test/summary-reporter.js prints every skip reason after the run.
 *
 *   const needs = skipIf(addonMissing('torch'));
 *   needs.describe('policy on the torch addon', () => { ... });
 *   needs.it('generates', async () => { ... });
 */
import { hasAddon, type AddonName } from '../../lib/native';

/** Why tests cannot run here (a non-empty string), or nothing when they can. */
export type SkipReason = string | null | undefined | false;

export interface SkipAware {
  /** The reason everything from this `skipIf` is skipped, or undefined when it all runs. */
  readonly reason: string | undefined;
  describe(name: string, fn: () => void): void;
  it(name: string, fn: jest.ProvidesCallback, timeout?: number): void;
}

/** The name a skipped test is registered under; summary-reporter.js reads the reason back from it. */
export function skippedName(name: string, reason: string): string {
  return `${name} (skipped: ${reason})`;
}

/** `describe` and `it` that run when `reason` is empty, and skip, naming the reason, when it is not. */
export function skipIf(reason: SkipReason): SkipAware {
  const why = reason ? String(reason) : undefined;
  if (why) {
    return {
      reason: why,
      describe: (name) => it.skip(skippedName(name, why), () => undefined),
      it: (name, fn) => it.skip(skippedName(name, why), fn),
    };
  }
  return {
    reason: undefined,
    describe: (name, fn) => describe(name, fn),
    it: (name, fn, timeout) => it(name, fn, timeout),
  };
}

/** Why an addon's tests cannot run: the addon is not built. */
export function addonMissing(addon: AddonName): string | undefined {
  return hasAddon(addon) ? undefined : `the ${addon} addon is not built (npm run build:${addon})`;
}
