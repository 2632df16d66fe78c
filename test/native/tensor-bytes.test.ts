/**
 * The tensor byte counter on libtorch's CPU allocator (native/torch/tensor_bytes.cpp), which
 * `crpo bench plan`'s measured check reads: a native policy's weights and AdamW moments (fp32:
 * 4 + 8 bytes per parameter) and its frozen copy (4 more) are counted to the byte, and freeing them
 * brings the live count back (the counted deleter runs). Other tensors alive in this process before
 * the counter was installed are not counted, so everything is read as differences. The
 * MemoryRecorder (lib/bench/memory.ts) reads it per phase.
 */
import { hasAddon, torchAddon } from '../../lib/native';
import { skipIf } from '../helpers/skip';

skipIf(!hasAddon('torch') && 'the torch addon is not built (npm run build:torch)').describe('tensorBytes', () => {
  it('counts a policy, its frozen copy and their release to the byte', async () => {
    const { PolicyModel: Policy, Tokenizer } = await import('../../lib/model');
    const addon = torchAddon();
    const before = addon.tensorBytes({ install: true });
    expect(before.installed).toBe(true);
    const p = await Policy.create(Tokenizer.build(['a b c d e f g h']), { preset: 'tiny' });
    const P = p.info().parameters;
    const created = addon.tensorBytes();
    expect(created.liveBytes - before.liveBytes).toBe(P * 12);
    const ref = await p.cloneFrozen();
    const cloned = addon.tensorBytes({ resetPeak: true });
    expect(cloned.liveBytes - created.liveBytes).toBe(P * 4);
    expect(cloned.peakBytes).toBe(cloned.liveBytes); // resetPeak: the peak starts again from the live count
    expect(cloned.allocations).toBeGreaterThan(created.allocations);
    ref.dispose();
    p.dispose();
    const after = addon.tensorBytes();
    expect(after.liveBytes).toBe(before.liveBytes);
    expect(after.peakBytes).toBe(cloned.peakBytes);
  });

  it('MemoryRecorder: per-phase peaks above its baseline, phases opened and closed in order', async () => {
    const { MemoryRecorder } = await import('../../lib/bench/memory');
    const { PolicyModel: Policy, Tokenizer } = await import('../../lib/model');
    const rec = new MemoryRecorder();
    rec.begin('create');
    const p = await Policy.create(Tokenizer.build(['a b c d e f g h']), { preset: 'tiny' });
    rec.end('create');
    const P = p.info().parameters;
    rec.begin('free');
    p.dispose();
    rec.end('free');
    expect(() => rec.end('free')).toThrow(expect.objectContaining({ code: 'ERR_CRPO_USAGE' }));
    rec.begin('again');
    expect(() => rec.begin('other')).toThrow("MemoryRecorder.begin('other'): phase 'again' is still open");
    rec.end('again');
    const r = rec.result();
    expect(r.phases.map((x) => x.name)).toEqual(['create', 'free', 'again']);
    expect(r.phases[0]).toMatchObject({ tensorPeakBytes: P * 12, tensorLiveAfterBytes: P * 12 });
    expect(r.phases[1]).toMatchObject({ tensorPeakBytes: P * 12, tensorLiveAfterBytes: 0 });
    expect(r.tensorPeakBytes).toBe(P * 12);
    if (process.platform === 'linux') expect(r.rssPeakBytes).toEqual(expect.any(Number));
  });
});
