/**
 * The vision position tables' start (config posInit, native/torch/model policy_model.cpp): 'sincos'
 * gives the spatial table's half of the width to the row and half to the column, so two patches of
 * one row share the first half and two of one column the second; both tables are scaled to
 * posInitStd; 'random' keeps the seeded N(0, posInitStd) draw.
 */
import { PolicyModel, Tokenizer } from '../../lib/model';
import { itWithNativePolicy, TINY_QUESTIONS } from '../helpers/native-policy';

const maybe = itWithNativePolicy('position init tests');

function std(a: Float32Array): number {
  const mean = a.reduce((s, x) => s + x, 0) / a.length;
  return Math.sqrt(a.reduce((s, x) => s + (x - mean) ** 2, 0) / (a.length - 1));
}

describe('vision position init', () => {
  maybe("'sincos': rows share the row half, columns the column half; std posInitStd", async () => {
    const p = await PolicyModel.create(Tokenizer.build(TINY_QUESTIONS), { preset: 'tiny', seed: 3, posInit: 'sincos' });
    try {
      const w = await p.getWeights();
      const spatial = w.find((t) => t.name === 'vision.spatial_pos')!;
      const temporal = w.find((t) => t.name === 'vision.temporal_pos')!;
      const grid = p.config.imageSize / p.config.patchSize,
        D = p.config.visionDim;
      expect(spatial.shape).toEqual([grid * grid, D]);
      const row = (i: number, from: number, to: number) => Array.from(spatial.data.subarray(i * D + from, i * D + to));
      // Patch (r, c) is row r * grid + c: (0, 0) and (0, 3) share the row half, (0, 1) and (2, 1) the column half.
      expect(row(0, 0, D / 2)).toEqual(row(3, 0, D / 2));
      expect(row(0, D / 2, D)).not.toEqual(row(3, D / 2, D));
      expect(row(1, D / 2, D)).toEqual(row(2 * grid + 1, D / 2, D));
      expect(row(1, 0, D / 2)).not.toEqual(row(2 * grid + 1, 0, D / 2));
      // Every patch has its own vector.
      const keys = new Set(Array.from({ length: grid * grid }, (_, i) => row(i, 0, D).join(',')));
      expect(keys.size).toBe(grid * grid);
      expect(std(spatial.data)).toBeCloseTo(p.config.posInitStd, 5);
      expect(std(temporal.data)).toBeCloseTo(p.config.posInitStd, 5);
    } finally {
      p.dispose();
    }
  });

  maybe("'random' (the preset's) is unchanged: the seeded normal draw, no shared halves", async () => {
    const tok = Tokenizer.build(TINY_QUESTIONS);
    const a = await PolicyModel.create(tok, { preset: 'tiny', seed: 3 });
    const b = await PolicyModel.create(tok, { preset: 'tiny', seed: 3, posInit: 'random' });
    try {
      const [wa, wb] = [await a.getWeights(), await b.getWeights()];
      const sa = wa.find((t) => t.name === 'vision.spatial_pos')!;
      expect(Array.from(sa.data)).toEqual(Array.from(wb.find((t) => t.name === 'vision.spatial_pos')!.data));
      const D = a.config.visionDim;
      expect(Array.from(sa.data.subarray(0, D / 2))).not.toEqual(Array.from(sa.data.subarray(3 * D, 3 * D + D / 2)));
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  maybe('an unknown posInit is refused in TS and in native code', async () => {
    const tok = Tokenizer.build(TINY_QUESTIONS);
    await expect(PolicyModel.create(tok, { preset: 'tiny', posInit: 'grid' as never })).rejects.toThrow(
      /'random' or 'sincos' for config\.posInit/,
    );
  });
});
