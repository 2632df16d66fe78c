/**
 * `crpo bench plan` (lib/bench/plan.ts): parameter counts (the native formula against the policy
 * the addon builds; the published Qwen sizes), how the peak is put together, the fit verdict,
 * sharding, and the refusals. The measured check is test/e2e/bench-plan-memory.test.ts.
 */
import { hasAddon } from '../../lib/native';
import { formatPlan, nativeParams, planMemory, planOptionsFromFlags, qwenLoraParams } from '../../lib/bench/plan';
import { PUBLISHED_CONFIGS } from '../../lib/hf/budget';
import { skipIf } from '../helpers/skip';

const GB = 1e9;

describe('bench plan', () => {
  const torchReason = hasAddon('torch') ? undefined : 'the torch addon is not built';
  skipIf(torchReason).it(
    `native parameter formula equals the parameters of the policy the addon ` + `builds`,
    async () => {
      const { PolicyModel, Tokenizer } = await import('../../lib/model');
      const tok = Tokenizer.build(['a b c d e f g h']);
      for (const shape of [
        { preset: 'tiny' as const },
        { preset: 'small' as const },
        { preset: 'tiny' as const, lmDim: 128, lmLayers: 3, lmHeads: 8, lmKvHeads: 4, lmMlp: 352, visionLayers: 1 },
        { preset: 'tiny' as const, visionStem: 8 },
        { preset: 'tiny' as const, visionStem: 16, visionStemDown: 16 },
      ]) {
        const p = await PolicyModel.create(tok, shape);
        try {
          expect({ shape, params: nativeParams(p.config) }).toEqual({ shape, params: p.info().parameters });
        } finally {
          p.dispose();
        }
      }
    },
  );

  it('published Qwen sizes: 8.29 B and 8.77 B parameters; LoRA r = 16 on q/k/v/o', () => {
    const q25 = planMemory({ model: 'Qwen2.5-VL-7B' }),
      q3 = planMemory({ model: 'qwen3-vl-8b-instruct' });
    expect(q25.params / 1e9).toBeCloseTo(8.29, 2);
    expect(q3.params / 1e9).toBeCloseTo(8.77, 2);
    // Qwen2.5-VL-7B: 28 layers x 16 x ((3584 + 3584) + 2 (3584 + 512) + (3584 + 3584))
    expect(qwenLoraParams(PUBLISHED_CONFIGS['Qwen2.5-VL-7B'], 16)).toBe(28 * 16 * (7168 + 2 * 4096 + 7168));
    expect(q25.trainableParams).toBe(qwenLoraParams(PUBLISHED_CONFIGS['Qwen2.5-VL-7B'], 16));
  });

  it('peak = resident + max(rollout, update); terms marked info stay out of it', () => {
    const r = planMemory({ model: 'Qwen3-VL-8B', gpus: 8, gpuMemGB: 80 });
    const sum = (ph: string) => r.terms.filter((t) => t.phase === ph).reduce((a, t) => a + t.bytes, 0);
    expect(r.residentBytes).toBe(sum('resident'));
    expect(r.peakBytes).toBe(sum('resident') + Math.max(sum('rollout'), sum('update')));
    expect(r.terms.find((t) => t.name === 'weights')!.bytes).toBe(r.params * 2);
    expect(r.terms.find((t) => t.name === 'reference')!.bytes).toBe(0); // LoRA: the base with adapters off
    expect(r.fits).toBe(true);
  });

  it('native policy: gradients and activations in the update, the weight read-back a phase of its own', () => {
    const r = planMemory({ model: 'native-small', batch: 2, groupSize: 4, promptTokens: 40, maxNewTokens: 16 });
    const t = (name: string) => r.terms.find((x) => x.name === name)!;
    const sum = (ph: string, tensorsOnly = false) =>
      r.terms.filter((x) => x.phase === ph && !(tensorsOnly && x.host)).reduce((a, x) => a + x.bytes, 0);
    expect(r.options.checkpointing).toBe(false); // the native policy keeps every layer, whatever was asked
    expect(t('gradients').phase).toBe('update');
    expect(t('digest')).toMatchObject({ phase: 'readback', bytes: r.params * 4 });
    expect(t('digestHost')).toMatchObject({ phase: 'readback', host: true, bytes: r.params * 4 });
    expect(r.peakBytes).toBe(sum('resident') + Math.max(sum('rollout'), sum('update'), sum('readback')));
    expect(r.tensorPeakBytes).toBe(
      sum('resident', true) + Math.max(sum('rollout', true), sum('update', true), sum('readback', true)),
    );
    // Activations grow with the sequences of an update: twice the prompts, about twice the bytes.
    const twice = planMemory({ model: 'native-small', batch: 4, groupSize: 4, promptTokens: 40, maxNewTokens: 16 });
    const act = (x: typeof r) => x.terms.find((y) => y.name === 'activations')!.bytes;
    expect(act(twice) / act(r)).toBeCloseTo(2, 1);
    expect(formatPlan(r)).toContain('gradient checkpointing off (the native policy keeps every layer)');
    expect(formatPlan(r)).toMatch(/\| \*\*peak = resident \+ max\(rollout, update, readback\)\*\* \|/);
  });

  it('fit verdict at the boundary, checkpointing and sharding move the right terms', () => {
    const base = { model: 'Qwen3-VL-8B', gpus: 8, lora: 0 };
    const full = planMemory({ ...base, gpuMemGB: 80 });
    expect(full.fits).toBe(false);
    expect(full.terms.find((t) => t.name === 'reference')!.bytes).toBe(full.params * 2);
    expect(full.advice).toMatch(
      /Does not fit: train LoRA adapters \(--lora 16\); shard gradients and optimizer state \(--sharded-optim\)/,
    );
    const sharded = planMemory({ ...base, shardedOptim: true });
    expect(sharded.terms.find((t) => t.name === 'optimizer')!.bytes).toBeCloseTo(
      full.terms.find((t) => t.name === 'optimizer')!.bytes / 8,
      0,
    );
    expect(planMemory({ ...base, gpuMemGB: full.peakBytes / GB }).fits).toBe(true);
    expect(planMemory({ ...base, gpuMemGB: (full.peakBytes - 1) / GB }).fits).toBe(false);
    const kept = planMemory({ model: 'Qwen3-VL-8B', checkpointing: false });
    const ck = planMemory({ model: 'Qwen3-VL-8B' });
    expect(kept.terms.find((t) => t.name === 'activations')!.bytes).toBeGreaterThan(
      10 * ck.terms.find((t) => t.name === 'activations')!.bytes,
    );
    expect(planMemory({ model: 'Qwen3-VL-8B' }).fits).toBeUndefined();
  });

  it('the table names every term, the peak and the verdict', () => {
    const text = formatPlan(planMemory({ model: 'Qwen2.5-VL-7B', gpus: 8, gpuMemGB: 80 }));
    expect(text).toMatch(
      /^crpo bench plan: Qwen2\.5-VL-7B \(qwen\), 8\.29 B parameters, 10\.1 M trained \(LoRA r = 16 on q\/k\/v\/o\); 8 dev/,
    );
    expect(text).toContain('| term | when | GiB | formula |');
    expect(text).toMatch(/\| \*\*peak = resident \+ max\(rollout, update\)\*\* \| \| \*\*\d+\.\d\d\*\* \|/);
    expect(text).toMatch(/^Verdict: fits in 80 GB \(74\.51 GiB\) per device/m);
  });

  it('refusals name the flag', () => {
    expect(() => planMemory({ model: 'Llama-3-8B' })).toThrow(
      '--model Llama-3-8B: neither a folder with config.json nor a known name ' +
        '(Qwen2.5-VL-7B, Qwen3-VL-4B, Qwen3-VL-8B, native-tiny, native-small)',
    );
    expect(() => planMemory({ model: 'Qwen3-VL-8B', gpus: 0 })).toThrow(
      'Expected an integer >= 1 for --gpus but received 0 of type number',
    );
    expect(() => planMemory({ model: 'Qwen3-VL-8B', gpuMemGB: -1 })).toThrow(
      'Expected a number of GB >= 0 for --gpu-mem but received -1 of type number',
    );
    expect(() => planMemory({ model: 'Qwen3-VL-8B', dtype: 'int8' as never })).toThrow(
      "Expected one of bfloat16, float16, float32 for --dtype but received 'int8' of type string",
    );
    expect(() => planOptionsFromFlags({})).toThrow(/needs --model/);
    expect(() => planOptionsFromFlags({ model: 'x', size: '448x448', pixels: 5 })).toThrow(
      '--size and --pixels both give the pixels per frame; give one',
    );
    expect(planOptionsFromFlags({ model: 'x', size: '448x448' }).pixels).toBe(448 * 448);
  });
});
