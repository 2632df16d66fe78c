/**
 * Shared checks of the Qwen2.5-VL / Qwen3-VL golden tests: locate ../shared/golden next to the
 * repository, read a case file, and compare tensors with a message that prints the first
 * mismatches and the max difference (llm.c style).
 */
import * as fs from 'fs';
import * as path from 'path';
import { hasAddon } from '../../lib/native';
import { readSafetensors, type LoadedTensor } from '../../lib/hf/safetensors';
import type { Grid } from '../../lib/hf/rope-index';
import type { QwenInputs } from '../../lib/hf/model';
import { skipIf } from '../helpers/skip';

export const GOLDEN_ROOT = path.resolve(__dirname, '..', '..', '..', 'shared', 'golden');

/** Why the golden tests of `model` cannot run here, or undefined when they can. */
export function goldenSkipReason(model: string): string | undefined {
  const dir = path.join(GOLDEN_ROOT, model);
  if (!fs.existsSync(path.join(dir, 'model.safetensors')))
    return `golden folder ${dir} is absent (CI clones shared/ beside the repo)`;
  if (!hasAddon('torch')) return 'the torch addon is not built (npm run build:torch)';
  return undefined;
}

export function readCase(model: string, name: string): Map<string, LoadedTensor> {
  return readSafetensors(path.join(GOLDEN_ROOT, model, `case_${name}.safetensors`));
}

function toNumbers(t: LoadedTensor): number[] {
  if (t.data instanceof BigInt64Array || Object.prototype.toString.call(t.data) === '[object BigInt64Array]') {
    return Array.from(t.data as BigInt64Array, (x) => Number(x));
  }
  return Array.from(t.data as ArrayLike<number>);
}

export function ints(t: LoadedTensor): number[] {
  return toNumbers(t);
}

function grids(t?: LoadedTensor): Grid[] | undefined {
  if (!t) return undefined;
  const v = toNumbers(t);
  const out: Grid[] = [];
  for (let i = 0; i < v.length; i += 3) out.push([v[i], v[i + 1], v[i + 2]]);
  return out;
}

/** The model inputs stored in a case (`in.*`). */
export function caseInputs(c: Map<string, LoadedTensor>): QwenInputs {
  const ids = c.get('in.input_ids')!;
  const mask = c.get('in.attention_mask');
  const [B, L] = ids.shape;
  const idv = toNumbers(ids);
  const mv = mask ? toNumbers(mask) : undefined;
  const rows = (v: number[]) => Array.from({ length: B }, (_, b) => v.slice(b * L, (b + 1) * L));
  const sec = c.get('in.second_per_grid_ts');
  return {
    inputIds: rows(idv),
    attentionMask: mv ? rows(mv) : undefined,
    pixelValues: c.get('in.pixel_values')?.data as Float32Array | undefined,
    imageGridThw: grids(c.get('in.image_grid_thw')),
    pixelValuesVideos: c.get('in.pixel_values_videos')?.data as Float32Array | undefined,
    videoGridThw: grids(c.get('in.video_grid_thw')),
    secondPerGridTs: sec ? Array.from(sec.data as Float32Array) : undefined,
  };
}

export interface CloseReport {
  ok: boolean;
  maxAbs: number;
  message: string;
}

/** |a - e| <= atol + rtol*|e| elementwise; the message lists the first mismatches. */
export function compareClose(
  name: string,
  actual: ArrayLike<number>,
  actualShape: number[],
  expected: LoadedTensor,
  atol: number,
  rtol = 0,
): CloseReport {
  const e = expected.data as ArrayLike<number>;
  const shapeOk = actualShape.length === expected.shape.length && actualShape.every((s, i) => s === expected.shape[i]);
  if (!shapeOk || actual.length !== e.length) {
    return { ok: false, maxAbs: Infinity, message: `${name}: shape [${actualShape}] but golden [${expected.shape}]` };
  }
  let maxAbs = 0;
  const bad: string[] = [];
  let nBad = 0;
  for (let i = 0; i < e.length; i++) {
    const d = Math.abs(actual[i] - e[i]);
    if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Infinity : Math.max(maxAbs, d);
    if (!(d <= atol + rtol * Math.abs(e[i]))) {
      nBad++;
      if (bad.length < 5) bad.push(`[${i}] got ${actual[i]} want ${e[i]} (diff ${d.toExponential(2)})`);
    }
  }
  const ok = nBad === 0;
  return {
    ok,
    maxAbs,
    message: ok
      ? `${name}: max |diff| ${maxAbs.toExponential(2)} <= ${atol}`
      : `${name}: ${nBad}/${e.length} values off by more than ${atol}; max |diff| ${maxAbs.toExponential(2)}; first: ${bad.join('; ')}`,
  };
}

/** Fails with every report's message when any comparison failed. */
export function expectAllClose(reports: CloseReport[]): void {
  const failed = reports.filter((r) => !r.ok);
  if (failed.length)
    throw new Error(
      `${failed.length} of ${reports.length} comparisons failed:\n${failed.map((r) => r.message).join('\n')}`,
    );
}

/**
 * The golden suite of one model: both cases, every comparison the README lists. Loads the model
 * once; position ids must be equal, activations within 1e-4 (fp32), losses within 1e-5
 * relative, gradients within 1e-4; KV-cached greedy decoding must equal uncached decoding.
 */
export function goldenSuite(model: 'qwen2_5_vl' | 'qwen3_vl'): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { QwenVLModel } = require('../../lib/hf/model') as typeof import('../../lib/hf/model');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { ropeIndex } = require('../../lib/hf/rope-index') as typeof import('../../lib/hf/rope-index');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { canonicalKey } = require('../../lib/hf/config') as typeof import('../../lib/hf/config');
  const reason = goldenSkipReason(model);
  if (reason) {
    skipIf(reason).it(`${model} golden comparisons`, () => undefined);
    return;
  }
  let m: Awaited<ReturnType<typeof QwenVLModel.load>>;
  beforeAll(async () => {
    m = await QwenVLModel.load(path.join(GOLDEN_ROOT, model));
  });
  afterAll(() => m?.dispose());

  for (const caseName of ['video', 'image_video']) {
    describe(`${model} / ${caseName}`, () => {
      const c = readCase(model, caseName);
      const inputs = caseInputs(c);

      test('rope position ids and deltas equal transformers exactly', () => {
        const r = ropeIndex(m.config, {
          inputIds: inputs.inputIds,
          attentionMask: inputs.attentionMask,
          imageGridThw: inputs.imageGridThw,
          videoGridThw: inputs.videoGridThw,
          secondPerGridTs: inputs.secondPerGridTs,
        });
        expect(Array.from(r.positionIds)).toEqual(ints(c.get('rope.position_ids')!));
        expect(r.deltas).toEqual(ints(c.get('rope.deltas')!));
      });

      test('vision tower, merged embeddings, decoder layers, logits within 1e-4; losses within 1e-5 relative; gradients within 1e-4', async () => {
        const gradKeys = [...c.keys()].filter((k) => k.startsWith('grad.'));
        const r = await m.forward(inputs, { capture: true, grads: gradKeys.map((k) => canonicalKey(k.slice(5))) });
        const reports: CloseReport[] = [];
        const activationKeys = [...c.keys()].filter(
          (k) =>
            k.startsWith('vis_') || k === 'inputs_embeds_merged' || k.startsWith('dec_layer') || k === 'final_norm_out',
        );
        expect(activationKeys.length).toBeGreaterThan(5);
        for (const k of activationKeys) {
          const got = r.capture[k];
          if (!got) {
            reports.push({ ok: false, maxAbs: Infinity, message: `${k}: not produced by the native model` });
            continue;
          }
          reports.push(compareClose(k, got.data, got.shape, c.get(k)!, 1e-4));
        }
        reports.push(compareClose('out.logits', r.logits.data, r.logits.shape, c.get('out.logits')!, 1e-4));
        const loss = (c.get('out.hf_loss_mean_ce')!.data as Float32Array)[0];
        const obj = (c.get('out.objective_sum_logsoftmax')!.data as Float32Array)[0];
        reports.push({
          ok: Math.abs(r.lossMeanCe - loss) <= 1e-5 * Math.abs(loss),
          maxAbs: Math.abs(r.lossMeanCe - loss),
          message: `hf_loss_mean_ce: got ${r.lossMeanCe} want ${loss}`,
        });
        reports.push({
          ok: Math.abs(r.objective - obj) <= 1e-5 * Math.abs(obj),
          maxAbs: Math.abs(r.objective - obj),
          message: `objective_sum_logsoftmax: got ${r.objective} want ${obj}`,
        });
        expect(gradKeys.length).toBeGreaterThanOrEqual(8);
        for (const k of gradKeys) {
          const got = r.grads[canonicalKey(k.slice(5))];
          reports.push(
            got
              ? compareClose(k, got.data, got.shape, c.get(k)!, 1e-4)
              : { ok: false, maxAbs: Infinity, message: `${k}: no gradient returned` },
          );
        }
        expectAllClose(reports);
      });

      test('KV-cached greedy generation equals uncached', async () => {
        const cached = await m.generate(inputs, { maxNewTokens: 6, eosTokenId: -1, useCache: true, keepLogits: true });
        const plain = await m.generate(inputs, { maxNewTokens: 6, eosTokenId: -1, useCache: false, keepLogits: true });
        expect(cached.tokens).toEqual(plain.tokens);
        expect(cached.tokens[0]).toHaveLength(6);
        const reports = cached.stepLogits.map((s, i) =>
          compareClose(
            `step ${i} logits`,
            s.data,
            s.shape,
            { dtype: 'F32', shape: plain.stepLogits[i].shape, data: plain.stepLogits[i].data },
            1e-4,
          ),
        );
        expectAllClose(reports);
        // the first step's logits are the last position of the golden logits
        const gl = c.get('out.logits')!;
        const [, L, V] = gl.shape;
        const last = (gl.data as Float32Array).subarray((L - 1) * V, L * V);
        expectAllClose([
          compareClose(
            'first-step logits vs golden',
            cached.stepLogits[0].data,
            [V],
            { dtype: 'F32', shape: [V], data: last },
            1e-4,
          ),
        ]);
      });
    });
  }
}
