/**
 * torchCall (lib/native.ts), the one way library modules make an asynchronous torch call: jobs
 * run one at a time in call order on the torch queue, a rejected native promise comes back as a
 * CrpoError of this realm with the stack of the function that called torchCall, and a failed job
 * does not stop the queue. No addon is needed: the "native" calls here are plain promises.
 */
import { CrpoError } from '../../lib/errors';
import { torchCall, torchQueue } from '../../lib/native';

/** A promise and the functions that settle it. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

// A named caller, so its frame can be found in the error's stack.
function callerOfTorchCall(): Promise<never> {
  return torchCall(() => Promise.reject({ name: 'Error', message: 'kernel failed', code: 'ERR_CRPO_TORCH' }));
}

describe('torchCall', () => {
  it('runs jobs one at a time, in call order', async () => {
    const events: string[] = [];
    const first = deferred<number>();
    const a = torchCall(() => {
      events.push('a start');
      return first.promise;
    });
    const b = torchCall(async () => {
      events.push('b start');
      return 2;
    });
    await Promise.resolve();
    await Promise.resolve();
    expect(events).toEqual(['a start']); // b waits for a
    expect(torchQueue.size).toBe(2);
    first.resolve(1);
    await expect(Promise.all([a, b])).resolves.toEqual([1, 2]);
    expect(events).toEqual(['a start', 'b start']);
    expect(torchQueue.size).toBe(0);
  });

  it("re-creates a native failure with its code and the caller's stack; the queue goes on", async () => {
    const err = await callerOfTorchCall().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CrpoError);
    expect(err).toMatchObject({ code: 'ERR_CRPO_TORCH', message: 'kernel failed' });
    expect((err as Error).stack).toContain('callerOfTorchCall');
    await expect(torchCall(async () => 'next')).resolves.toBe('next');
  });

  it('turns a synchronous throw of the native function into a rejection', async () => {
    const p = torchCall(() => {
      throw { name: 'TypeError', message: 'Expected a Uint8Array', code: 'ERR_CRPO_INVALID_ARG' };
    });
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TypeError);
    expect(err).toMatchObject({ code: 'ERR_CRPO_INVALID_ARG', message: 'Expected a Uint8Array' });
  });
});
