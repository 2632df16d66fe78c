/**
 * The one set of rules of the native argument readers (args:: in native/common/napi_util): an
 * option that is undefined or null is absent (its default applies), and an option of any other
 * wrong type is refused with a TypeError that names it and the value received, never silently
 * replaced by the default. Checked on one reader of each binding that used to have its own:
 * the Qwen loader's config (whose `get_bool` ignored a non-boolean), the process group's options
 * and the foundation ops' options (where null was a wrong type).
 */
import { callSync, coreAddon, torchAddon } from '../../lib/native';
import type { NativeDistInitOptions, NativeQwenLoadSpec } from '../../lib/native-types';
import { addonMissing, skipIf } from '../helpers/skip';

/** The exception `fn` throws, in this realm (callSync re-creates native errors). */
function thrown(fn: () => unknown): unknown {
  try {
    callSync(fn);
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

/** A tiny Qwen2.5-VL config, valid up to the fields a test overrides. */
function qwenSpec(text: Record<string, unknown>): NativeQwenLoadSpec {
  return {
    config: {
      arch: 'qwen2_5_vl',
      text: {
        hiddenSize: 8,
        intermediateSize: 16,
        numLayers: 1,
        numHeads: 2,
        numKvHeads: 1,
        headDim: 4,
        vocabSize: 32,
        mropeSection: [1, 1, 0],
        ...text,
      },
      vision: { depth: 1, hiddenSize: 8, intermediateSize: 16, numHeads: 2, patchSize: 2, outHiddenSize: 8 },
      imageTokenId: 30,
      videoTokenId: 31,
    },
    tensors: [],
  } as unknown as NativeQwenLoadSpec;
}

skipIf(addonMissing('torch')).describe('option readers of the torch addon', () => {
  it('refuses a non-boolean Qwen config flag, naming it', () => {
    const err = thrown(() => torchAddon().qwenLoad(qwenSpec({ mropeInterleaved: 'yes' })));
    expect(err).toMatchObject({
      code: 'ERR_CRPO_INVALID_ARG',
      message: "qwenLoad: expected a boolean for mropeInterleaved but received 'yes' of type string",
    });
    expect(thrown(() => torchAddon().qwenLoad(qwenSpec({ qkNorm: 1 })))).toMatchObject({
      code: 'ERR_CRPO_INVALID_ARG',
      message: 'qwenLoad: expected a boolean for qkNorm but received 1 of type number',
    });
  });

  it('refuses a non-boolean process group option, naming it', () => {
    const options = {
      masterAddr: '127.0.0.1',
      masterPort: 29999,
      worldSize: 1,
      rank: 0,
      agentStore: 'yes',
    } as unknown as NativeDistInitOptions;
    expect(thrown(() => torchAddon().distInit(options))).toMatchObject({
      code: 'ERR_CRPO_INVALID_ARG',
      message: "distInit: expected a boolean for agentStore but received 'yes' of type string",
    });
  });
});

skipIf(addonMissing('core')).describe('option readers of the core addon', () => {
  const inputs = () => ({
    groups: 1,
    groupSize: 4,
    answers: new Int32Array([0, 1, 0, 2]),
    truth: new Int32Array([0]),
    numOptions: new Int32Array([3]),
  });

  it('takes a null option as absent', () => {
    const absent = callSync(() => coreAddon().grpoAdvantagesSync(inputs()));
    const nulls = callSync(() => coreAddon().grpoAdvantagesSync({ ...inputs(), norm: null, eps: null } as never));
    expect(Array.from(nulls.advantage)).toEqual(Array.from(absent.advantage));
    expect(Array.from(absent.advantage).some((a) => a !== 0)).toBe(true);
  });

  it('refuses a wrong-typed option, naming it', () => {
    expect(thrown(() => coreAddon().grpoAdvantagesSync({ ...inputs(), norm: 5 } as never))).toMatchObject({
      code: 'ERR_CRPO_INVALID_ARG',
      message: 'grpoAdvantagesSync: expected a string for norm but received 5 of type number',
    });
  });
});
