/**
 * `crpo bench plan` for the qwen policy's shared-prefix update (lib/bench/plan.ts, lib/hf/budget.ts
 * sharedPrefixUpdate): the default, its terms against the per-row path's term by term at one row
 * (the slow twin: the same tensors less the completion-to-prefix scores the per-row path computes
 * for prefix queries, plus the grouped keys/values expanded per row), rows of two prompts in one
 * micro-batch, and the `--no-shared-prefix` flag. The measured check is in docs/real-models.md.
 */
import { planMemory, planOptionsFromFlags } from '../../lib/bench/plan';
import { estimateBudget, PUBLISHED_CONFIGS, sharedPrefixUpdate } from '../../lib/hf/budget';

const cfg = PUBLISHED_CONFIGS['Qwen2.5-VL-7B'];
const scenario = {
  frames: 16,
  framePixels: 128 * 28 * 28,
  promptTokens: 120,
  completionTokens: 256,
  sequences: 8,
  loraRank: 16,
  bytes: 2,
};
const term = (r: ReturnType<typeof planMemory>, name: string) => r.terms.find((t) => t.name === name)!;

describe('bench plan: the shared-prefix update', () => {
  test('is the default, and says so', () => {
    const r = planMemory({ model: 'Qwen2.5-VL-7B' });
    expect(r.options.sharedPrefix).toBe(true);
    expect(term(r, 'activations').label).toContain('shared prefix');
    expect(term(r, 'logits').label).toContain('completion tokens only');
    expect(planOptionsFromFlags({ model: 'x', 'shared-prefix': false }).sharedPrefix).toBe(false);
    expect(planOptionsFromFlags({ model: 'x' }).sharedPrefix).toBeUndefined();
  });

  test('one row: the per-row tensors less the prefix-to-completion scores, plus the expanded keys/values', () => {
    const e = estimateBudget(cfg, scenario);
    const u = sharedPrefixUpdate(cfg, scenario, 1);
    const t = cfg.text;
    const Lp = e.prefixLen,
      C = scenario.completionTokens,
      L = e.seqLen;
    expect(Lp + C).toBe(L);
    const qd = t.numHeads * t.headDim;
    const perRow = e.activationsPerSeqGiB * 2 ** 30;
    const scoresNotRun = t.numLayers * t.numHeads * Lp * C * (4 + scenario.bytes);
    const expanded = t.numLayers * 2 * qd * L * scenario.bytes;
    expect(u.activations).toBeCloseTo(perRow - scoresNotRun + expanded, -3);
    expect(u.logits).toBe(C * t.vocabSize * 4 * 3);
    expect(e.logitsPerSeqGiB * 2 ** 30).toBeCloseTo(L * t.vocabSize * 4 * 3, -3);
  });

  test('a micro-batch of G rows of one prompt runs its prefix once; two prompts, twice', () => {
    const base = { model: 'Qwen2.5-VL-7B', groupSize: 8, checkpointing: false };
    const one = planMemory({ ...base, microBatch: 8 });
    const two = planMemory({ ...base, microBatch: 16 });
    const rows = planMemory({ ...base, microBatch: 8, sharedPrefix: false });
    const u8 = sharedPrefixUpdate(cfg, scenario, 8);
    expect(term(one, 'activations').bytes).toBeCloseTo(u8.activations, -3);
    expect(term(two, 'activations').bytes).toBeCloseTo(2 * u8.activations, -3);
    expect(term(one, 'logits').bytes).toBe(u8.logits);
    // the per-row path runs the prefix 8 times and scores every position
    expect(term(rows, 'activations').bytes).toBeGreaterThan(3 * term(one, 'activations').bytes);
    expect(term(rows, 'logits').bytes / term(one, 'logits').bytes).toBeCloseTo(one.seqLen / 256, 6);
    // checkpointed: every layer's input over Lp + 8 C tokens, plus one layer kept
    const ck = planMemory({ ...base, microBatch: 8, checkpointing: true });
    expect(term(ck, 'activations').bytes).toBeCloseTo(u8.checkpointed, -3);
    expect(u8.checkpointed).toBeLessThan(u8.activations / 10);
  });
});
