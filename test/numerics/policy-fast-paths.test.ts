/**
 * Fast paths of the native policy against their slow, obviously correct twins (native/torch/model
 * fast_path_check, reached as policyGradCheck('fast:<name>')): the same computation runs once with
 * the fast paths and once under a ReferencePaths guard that forces the plain ATen formulation, on
 * random inputs; maxError = max |fast - slow| / max(1, |slow|), and any token difference fails.
 */
import { policyGradCheck } from '../../lib/model';
import { itWithNativePolicy } from '../helpers/native-policy';

const maybe = itWithNativePolicy('policy fast paths');

describe('policy fast paths vs slow twins', () => {
  maybe(
    'decode-attention kernel vs the matmul formulation in float64 (L = 1/3/16, masked keys, a row with no key)',
    async () => {
      const r = await policyGradCheck('fast:attention_decode', 3);
      expect(r.checked).toBeGreaterThan(1000);
      expect(r.maxAbsGrad).toBeGreaterThan(1e-2);
      expect(r.maxError).toBeLessThan(1e-12);
    },
  );
  maybe('decode-attention kernel vs the matmul formulation in float32 (the vectorised build)', async () => {
    const r = await policyGradCheck('fast:attention_decode_f32', 3);
    expect(r.checked).toBeGreaterThan(1000);
    expect(r.maxAbsGrad).toBeGreaterThan(1e-2);
    // float32 sums in another order, on outputs of size ~10 (random weights of std 0.4)
    expect(r.maxError).toBeLessThan(1e-4);
  });
  maybe(
    'grouped-KV attention (keys/values read in place) vs repeated per query head: outputs and every gradient, float64',
    async () => {
      const r = await policyGradCheck('fast:attention_grouped', 4);
      expect(r.checked).toBeGreaterThan(1000);
      expect(r.maxAbsGrad).toBeGreaterThan(0.1);
      expect(r.maxError).toBeLessThan(1e-12);
    },
  );
  maybe(
    'generation (greedy and sampled from the same RNG state): same tokens and lengths, log-probs to rounding',
    async () => {
      const r = await policyGradCheck('fast:generate', 5);
      expect(r.checked).toBeGreaterThan(100);
      expect(r.maxAbsGrad).toBeGreaterThan(0.5);
      expect(r.maxError).toBeLessThan(1e-4);
    },
  );
  maybe(
    'log-probs and entropy of given completions (lengths 0..width, shared prefix and whole rows): packed head + decode kernel as the slow twin',
    async () => {
      const r = await policyGradCheck('fast:logprobs', 13);
      expect(r.checked).toBe(2 * 2 * 12 * 7); // (log-probs, entropy) x (shared prefix, whole rows) x N x C
      expect(r.maxAbsGrad).toBeGreaterThan(1);
      expect(r.maxError).toBeLessThan(1e-5);
    },
  );
  maybe(
    'three RL train steps (clipping, weight decay): weights, AdamW moments, loss and grad norm as the slow twin',
    async () => {
      const r = await policyGradCheck('fast:train_step', 9);
      expect(r.checked).toBeGreaterThan(10000);
      expect(r.maxAbsGrad).toBeGreaterThan(0.1);
      // One step agrees to 1 float32 ulp (6e-8); later steps start from weights 1 ulp apart and
      // Adam's m / sqrt(v) amplifies that on near-zero gradients (measured 1.4e-5 after three).
      expect(r.maxError).toBeLessThan(1e-4);
    },
  );
  maybe(
    "the stride-2 front's GELUs on the NHWC view vs on the channels-last map: output, input and convolution gradients",
    async () => {
      const r = await policyGradCheck('fast:stem_gelu', 17);
      // output (3 x 2 x 16 x 16) + input gradient (3 x 4 x 8 x 8 x 3) + stem (6 x 3 x 3 x 3) + down (8 x 6 x 3 x 3)
      expect(r.checked).toBe(3 * 2 * 16 * 16 + 3 * 4 * 8 * 8 * 3 + 6 * 3 * 3 * 3 + 8 * 6 * 3 * 3);
      expect(r.maxAbsGrad).toBeGreaterThan(0.1);
      expect(r.maxError).toBeLessThan(1e-5); // the vectorised and the scalar erf differ in the last bits
    },
  );
  maybe(
    'fused grad-norm clip + AdamW vs torch::optim::AdamW after clip_grad_norm_ (four steps, decay on matrices only)',
    async () => {
      const r = await policyGradCheck('fast:adamw', 11);
      expect(r.checked).toBeGreaterThan(500);
      expect(r.maxAbsGrad).toBeGreaterThan(1);
      expect(r.maxError).toBeLessThan(1e-6);
    },
  );
  maybe('an unknown fast path is refused with the list of known ones', async () => {
    await expect(policyGradCheck('fast:nope', 0)).rejects.toThrow(/unknown name 'nope' \(known: attention_decode/);
  });
});
