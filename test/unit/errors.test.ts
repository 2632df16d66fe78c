/** Error helpers: the standard message, realm-safe re-creation of native errors, registries. */
import { CrpoError, describe as describeValue, fromNative, invalidArg, isUserError } from '../../lib/errors';
import { Registry } from '../../lib/registry';

describe('errors', () => {
  it('formats the standard message', () => {
    expect(invalidArg('groupSize', 'an integer >= 2', 1).message).toBe(
      'Expected an integer >= 2 for groupSize but received 1 of type number',
    );
    expect(describeValue(new Float32Array(3))).toBe('Float32Array(3)');
  });
  it('re-creates native errors in this realm with code and op', () => {
    const e = fromNative(
      { name: 'RangeError', message: 'bad', code: 'ERR_CRPO_OUT_OF_RANGE', op: 'x' },
      new Error().stack,
    );
    expect(e).toBeInstanceOf(RangeError);
    expect(e).toMatchObject({ code: 'ERR_CRPO_OUT_OF_RANGE', op: 'x', message: 'bad' });
    expect(fromNative(new Error('boom'))).toMatchObject({ code: 'ERR_CRPO_NATIVE' });
    expect(isUserError(fromNative(new Error('boom')))).toBe(false);
    expect(isUserError(new CrpoError('ERR_CRPO_CONFIG', 'x'))).toBe(true);
  });
  it('registries list the known names on a miss', () => {
    const r = new Registry<number>('algorithm').register('grpo', 1).register('crpo', 2);
    expect(() => r.get('ppo')).toThrow("Unknown algorithm 'ppo'; known: crpo, grpo");
    expect(r.get('crpo')).toBe(2);
  });
});
