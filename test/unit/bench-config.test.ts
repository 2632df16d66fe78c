/**
 * lib/bench: the statistics every bench reports and the checks of `crpo bench rollout`'s config
 * (each refusal names the flag and the fix), without running a policy.
 */
import { summarize } from '../../lib/bench/stats';
import { parseSize, resolveRolloutBenchConfig, ROLLOUT_BENCH_DEFAULTS } from '../../lib/bench/rollout';

describe('summarize', () => {
  it('median (odd and even counts), min, max and spread', () => {
    expect(summarize([5, 1, 3])).toEqual({ medianMs: 3, minMs: 1, maxMs: 5, spread: 4 / 3, runs: 3 });
    expect(summarize([4, 1, 3, 2]).medianMs).toBe(2.5);
    expect(summarize([7]).spread).toBe(0);
  });
  it('no samples: NaN figures and 0 runs', () => {
    const s = summarize([]);
    expect(s.runs).toBe(0);
    expect(Number.isNaN(s.medianMs)).toBe(true);
  });
});

describe('bench rollout config', () => {
  it("defaults: native policy, B 8, G 8, G' = G, 8 frames of 32x32, 16 new tokens, 5 steps after 2 warm-up", () => {
    expect(resolveRolloutBenchConfig()).toEqual(ROLLOUT_BENCH_DEFAULTS);
    expect(ROLLOUT_BENCH_DEFAULTS).toMatchObject({
      policy: 'native',
      batch: 8,
      groupSize: 8,
      cfGroupSize: 0,
      frames: 8,
      height: 32,
      width: 32,
      maxNewTokens: 16,
      steps: 5,
      warmup: 2,
    });
  });

  it('qwen on CPU: small sizes unless given; on CUDA the general defaults', () => {
    const cpu = resolveRolloutBenchConfig({ policy: 'qwen', model: '/m' });
    expect([cpu.batch, cpu.groupSize, cpu.maxNewTokens, cpu.steps, cpu.warmup]).toEqual([2, 2, 8, 2, 1]);
    const given = resolveRolloutBenchConfig({ policy: 'qwen', model: '/m', batch: 4, steps: 3 });
    expect([given.batch, given.groupSize, given.steps]).toEqual([4, 2, 3]);
    const cuda = resolveRolloutBenchConfig({ policy: 'qwen', model: '/m', device: 'cuda', dtype: 'bfloat16' });
    expect([cuda.batch, cuda.groupSize, cuda.maxNewTokens]).toEqual([
      ROLLOUT_BENCH_DEFAULTS.batch,
      ROLLOUT_BENCH_DEFAULTS.groupSize,
      ROLLOUT_BENCH_DEFAULTS.maxNewTokens,
    ]);
  });

  it('--size HxW, or one number for a square', () => {
    expect(parseSize('48x48')).toEqual({ height: 48, width: 48 });
    expect(parseSize(64)).toEqual({ height: 64, width: 64 });
    expect(() => parseSize('big')).toThrow(
      "Expected HxW in pixels (e.g. '32x32') for --size but received 'big' of type string",
    );
    expect(() => parseSize('4x4')).toThrow(/at least 8x8 pixels for --size/);
  });

  const refuse = (o: Record<string, unknown>, message: string | RegExp, code?: string) => {
    let err: (Error & { code?: string }) | undefined;
    try {
      resolveRolloutBenchConfig(o);
    } catch (e) {
      err = e as Error & { code?: string };
    }
    expect(err).toBeDefined();
    expect(err!.message).toEqual(typeof message === 'string' ? message : expect.stringMatching(message));
    if (code) expect(err!.code).toBe(code);
  };

  it('refuses what is not supported, naming the flag and the fix', () => {
    refuse(
      { policy: 'llama' },
      "Expected one of native, qwen for --policy but received 'llama' of type string",
      'ERR_CRPO_INVALID_ARG',
    );
    refuse({ batch: 0 }, 'Expected an integer >= 1 for --batch but received 0 of type number', 'ERR_CRPO_OUT_OF_RANGE');
    refuse({ groupSize: 2.5 }, 'Expected an integer for --group-size but received 2.5 of type number');
    refuse({ maxNewTokens: 0 }, /for --max-new-tokens/);
    refuse(
      { frames: 7 },
      'Expected an even number (temporal patches of 2 frames) for --frames but received 7 of type number',
    );
    refuse(
      { height: 32, width: 48 },
      "--size 32x48: the benchmark's synthetic clips are square; use HxH (e.g. --size 32x32)",
    );
    refuse({ height: 40, width: 40 }, /a multiple of 16 for the native policy/);
    refuse({ device: 'gpu' }, "Expected 'cpu' or 'cuda[:N]' for --device but received 'gpu' of type string");
    refuse(
      { dtype: 'bfloat16' },
      '--dtype bfloat16: the native policy runs bfloat16 only on CUDA; use --dtype float32 on cpu',
      'ERR_CRPO_DTYPE',
    );
    refuse({ lora: 8 }, '--lora 8: the native policy trains every weight (no LoRA); --lora is for --policy qwen');
    refuse({ model: '/m' }, /--model \/m: the native policy is created fresh/);
    refuse(
      { policy: 'qwen' },
      '--policy qwen needs --model <folder> (a Hugging Face Qwen2.5-VL / Qwen3-VL folder)',
      'ERR_CRPO_MODEL_LOAD',
    );
    refuse(
      { policy: 'qwen', model: '/m', dtype: 'float16' },
      '--dtype float16 needs a CUDA device (libtorch has no fp16 matmul on CPU); use --dtype bfloat16 or float32 on ' +
        'cpu',
    );
  });
});
