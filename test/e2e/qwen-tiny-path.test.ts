/**
 * The whole Qwen-VL path on the golden Qwen3-VL tiny config, CPU: frames -> processor -> chat
 * text -> tokens; G sampled rollouts of one prompt (vision encoded once); group-normalised
 * rewards -> LoRA GRPO steps against the frozen reference; checkpoint (PEFT adapter + AdamW
 * state) and resume into a fresh model; merged export, reload, and answering from the export.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { QwenVLModel, type QwenInputs } from '../../lib/hf/model';
import {
  expandPlaceholders,
  frameTimestamps,
  processFrames,
  renderChat,
  sampleFrameIndices,
} from '../../lib/hf/processor';
import { tokenizerFor } from '../../lib/hf/tokenizer';
import { GOLDEN_ROOT, goldenSkipReason } from '../numerics/golden-qwen-helpers';
import { skipIf } from '../helpers/skip';

const MODEL = 'qwen3_vl';
const reason = goldenSkipReason(MODEL);
const DIR = path.join(GOLDEN_ROOT, MODEL);

skipIf(reason).describe('Qwen3-VL tiny: rollouts, LoRA GRPO, checkpoint, export', () => {
  test('end to end', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-qwen-e2e-'));
    const m = await QwenVLModel.load(DIR);
    try {
      const cfg = m.config;
      // a 12-frame 64x64 video at 6 fps -> 4 sampled frames -> grid (2, 4, 4)
      const [total, H, W] = [12, 64, 64];
      const idx = sampleFrameIndices(cfg.arch, total, 6, { fps: 2 });
      expect(idx).toEqual([0, 4, 7, 11]);
      const frames = new Uint8Array(idx.length * H * W * 3);
      idx.forEach((f, t) => frames.fill((f * 20) % 256, t * H * W * 3, (t + 1) * H * W * 3));
      const vid = await processFrames(cfg, frames, idx.length, H, W, 'video', {
        minPixels: 64 * 64,
        maxPixels: 4 * 64 * 64,
      });
      expect(vid.grid).toEqual([2, 4, 4]);
      const tok = tokenizerFor(DIR, cfg);
      const chat = renderChat(cfg.arch, [
        { role: 'user', content: [{ type: 'video' }, { type: 'text', text: 'Moving? A or B.' }] },
      ]);
      const text = expandPlaceholders(cfg, chat, [], [{ grid: vid.grid, timestamps: frameTimestamps(idx, 6) }]);
      expect(text).toContain('<0.3 seconds><|vision_start|>');
      const prompt = tok.encode(text);
      expect(tok.decode(prompt)).toBe(text);
      const G = 4;
      const base: QwenInputs = {
        inputIds: Array.from({ length: G }, () => prompt),
        pixelValuesVideos: vid.pixelValues,
        videoGridThw: [vid.grid],
        shareVision: true,
      };
      m.addLora({ rank: 4, alpha: 8, targetModules: ['q_proj', 'v_proj'], seed: 3 });
      m.setGradientCheckpointing(true);
      const before = await m.forward({ ...base, inputIds: [prompt], shareVision: false });
      let lastStats;
      for (let step = 0; step < 3; step++) {
        const roll = await m.generate(base, {
          maxNewTokens: 6,
          temperature: 1,
          topP: 0.95,
          seed: 100 + step,
          eosTokenId: -1,
        });
        // reward: fraction of even token ids; GRPO advantage = (r - mean) / (std + eps)
        const rewards = roll.tokens.map((t) => t.filter((x) => x % 2 === 0).length / t.length);
        const mean = rewards.reduce((a, b) => a + b, 0) / G;
        const std = Math.sqrt(rewards.reduce((a, b) => a + (b - mean) ** 2, 0) / G);
        const advantages = Float32Array.from(rewards, (r) => (r - mean) / (std + 1e-4));
        const seqs = roll.tokens.map((t) => [...prompt, ...t]);
        const L = seqs[0].length;
        const rows: QwenInputs = { ...base, inputIds: seqs };
        const completionMask = Int32Array.from({ length: G * L }, (_, i) => (i % L >= prompt.length ? 1 : 0));
        const oldLogprobs = new Float32Array(G * (L - 1));
        roll.logprobs.forEach((lp, g) => lp.forEach((v, j) => (oldLogprobs[g * (L - 1) + prompt.length - 1 + j] = v)));
        const ref = await m.forward(rows, { lora: false });
        lastStats = await m.trainStep(rows, {
          completionMask,
          advantages,
          oldLogprobs,
          refLogprobs: ref.tokenLogprobs.data,
          klBeta: 0.04,
          lr: 1e-2,
        });
        expect(lastStats.tokens).toBe(G * 6);
        expect(Number.isFinite(lastStats.loss)).toBe(true);
      }
      const after = await m.forward({ ...base, inputIds: [prompt], shareVision: false });
      let moved = 0;
      for (let i = 0; i < after.logits.data.length; i++)
        moved = Math.max(moved, Math.abs(after.logits.data[i] - before.logits.data[i]));
      expect(moved).toBeGreaterThan(1e-4);

      // checkpoint and resume: same adapters and optimizer state -> same next step
      const ck = path.join(tmp, 'checkpoint');
      await m.saveTrainingState(ck);
      expect(fs.readdirSync(ck).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'optimizer.pt']);
      const r = await QwenVLModel.load(DIR);
      r.setGradientCheckpointing(true);
      await r.loadTrainingState(ck);
      const one: QwenInputs = { ...base, inputIds: [prompt], shareVision: false };
      expect(Array.from((await r.forward(one)).logits.data)).toEqual(Array.from(after.logits.data));
      const L0 = prompt.length;
      const batch = {
        completionMask: Int32Array.from({ length: L0 }, (_, i) => (i >= L0 - 4 ? 1 : 0)),
        advantages: Float32Array.of(1),
        lr: 1e-2,
      };
      const sa = await m.trainStep(one, batch);
      const sb = await r.trainStep(one, batch);
      expect(sb.loss).toBe(sa.loss);
      expect(Array.from((await r.forward(one)).logits.data)).toEqual(Array.from((await m.forward(one)).logits.data));
      r.dispose();

      // merged export -> reload -> answers from the exported folder
      const out = path.join(tmp, 'export');
      m.exportTo(out);
      const e = await QwenVLModel.load(out);
      const a = await m.generate(one, { maxNewTokens: 5, eosTokenId: -1 });
      const b = await e.generate(one, { maxNewTokens: 5, eosTokenId: -1 });
      expect(b.tokens).toEqual(a.tokens);
      expect(typeof tok.decode(b.tokens[0])).toBe('string');
      e.dispose();
    } finally {
      m.dispose();
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
