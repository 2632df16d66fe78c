/**
 * The evaluation runner (lib/eval/runner.ts): outputs and their agreement with the metrics,
 * strict answer parsing, resume (finished ids skipped, torn last line cut and reported, failed
 * samples retried), refusing to mix runs, and a run against the mock OpenAI server with 429s,
 * 500s and malformed bodies along the way.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { DyBenchRecord } from '../../lib/data/schema';
import { computeMetrics } from '../../lib/eval/metrics';
import type { AnswerModel, AnswerRequest, AnswerResponse } from '../../lib/eval/model';
import { readSamples, runEval, type SampleResult } from '../../lib/eval/runner';
import { LETTERS } from '../../lib/prompt';
import { renderSynthetic, synthesizeRecords } from '../../lib/synth';
import { encodeMp4 } from '../../lib/video';
import { startMockOpenAI } from '../fixtures/openai-mock-server';

let dir: string;
let data: string;
let records: DyBenchRecord[];

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-eval-runner-'));
  records = synthesizeRecords({ split: 'test', pairs: 3, seed: 5 });
  data = path.join(dir, 'data.jsonl');
  fs.writeFileSync(data, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const byId = (id: string): DyBenchRecord => records.find((r) => r.id === id)!;
const quiet = { log: (): void => undefined };

/** A scripted in-process model: `reply(req)` gives the raw text (or an error); it records every id asked. */
class ScriptedModel implements AnswerModel {
  readonly name = 'scripted';
  asked: string[] = [];
  calls = 0;
  constructor(private readonly reply: (req: AnswerRequest, n: number) => string | { error: string }) {}
  async answer(requests: AnswerRequest[]): Promise<AnswerResponse[]> {
    this.calls++;
    return requests.map((r) => {
      this.asked.push(r.id);
      const out = this.reply(r, this.asked.length);
      return typeof out === 'string' ? { raw: out, latencyMs: 1 } : { raw: '', latencyMs: 1, error: out.error };
    });
  }
}

const lines = (file: string): SampleResult[] =>
  fs
    .readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

test('writes every output; per-sample lines and summary agree with the metrics of the parsed answers', async () => {
  const out = path.join(dir, 'run-a');
  // Right on '-a' members, a substring-style non-answer on some '-b' members.
  const model = new ScriptedModel((r) =>
    r.id.endsWith('-a')
      ? `I think... <answer>${LETTERS[byId(r.id).answer]}</answer>`
      : r.id.includes('static')
        ? 'The answer is A'
        : '<answer>A</answer>',
  );
  const res = await runEval({ data, out, model: {}, bootstrap: 200, concurrency: 3 }, { ...quiet, model });
  for (const f of Object.values(res.files)) expect(fs.statSync(f).size).toBeGreaterThan(0);
  expect(fs.readFileSync(res.files.png).subarray(1, 4).toString()).toBe('PNG');
  const got = lines(res.files.samples);
  expect(got.map((l) => l.id).sort()).toEqual(records.map((r) => r.id).sort());
  expect(new Set(model.asked).size).toBe(records.length);
  for (const l of got) {
    const r = byId(l.id);
    expect(l).toMatchObject({ pair_id: r.pair_id, category: r.category, answer: r.answer, latency_ms: 1 });
    if (l.id.endsWith('-a'))
      expect(l).toMatchObject({
        prediction: r.answer,
        prediction_letter: LETTERS[r.answer],
        correct: true,
        format_ok: true,
      });
    else if (l.id.includes('static'))
      expect(l).toMatchObject({ prediction: -1, prediction_letter: null, correct: false, raw: 'The answer is A' });
    else expect(l).toMatchObject({ prediction: 0, correct: r.answer === 0 });
  }
  const want = computeMetrics(
    got.map((l) => ({
      id: l.id,
      pair_id: l.pair_id,
      category: l.category,
      answer: l.answer,
      prediction: l.prediction,
    })),
  );
  expect(res.summary.metrics).toEqual(want.groups);
  expect(JSON.parse(fs.readFileSync(res.files.summary, 'utf8')).metrics).toEqual(want.groups);
  expect(res.summary).toMatchObject({
    n_records: records.length,
    n_finished: records.length,
    n_failed: 0,
    n_resumed: 0,
    torn_bytes: 0,
    model: 'scripted',
  });
  const md = fs.readFileSync(res.files.markdown, 'utf8');
  expect(md).toContain('| group | pairs | videos | Acc | P-Acc | sensitivity | invariance | invalid |');
  expect(md).toMatch(/\| moving direction \| 3 \| 6 \| \d+\.\d \[\d+\.\d, \d+\.\d\] \|/);
  const run = JSON.parse(fs.readFileSync(res.files.run, 'utf8'));
  expect(run.fingerprint).toMatchObject({
    model: 'scripted',
    null_option: false,
    data_sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
  });
  expect(run.config.data).toBe(path.resolve(data));
});

test('resume: finished ids are skipped, a torn last line is cut and reported, failed samples are retried', async () => {
  const out = path.join(dir, 'run-b');
  // First run: samples of moving_direction fail for good.
  const first = new ScriptedModel((r) =>
    r.id.includes('moving') ? { error: 'HTTP 500: down' } : `<answer>${LETTERS[byId(r.id).answer]}</answer>`,
  );
  const r1 = await runEval({ data, out, model: {}, bootstrap: 0 }, { ...quiet, model: first });
  expect(r1.summary.n_failed).toBe(6);
  expect(fs.readFileSync(r1.files.markdown, 'utf8')).toContain(
    '**6 sample(s) failed after all retries and count as wrong.**',
  );
  expect(r1.summary.metrics.moving_direction).toMatchObject({ acc: 0, invalid_rate: 1 });
  // Simulate a crash in the middle of a write: half a line at the end.
  fs.appendFileSync(r1.files.samples, '{"id":"synth-test-static-00000-a","pair_');
  const log: string[] = [];
  const second = new ScriptedModel((r) => `<answer>${LETTERS[byId(r.id).answer]}</answer>`);
  const r2 = await runEval({ data, out, model: {}, bootstrap: 0 }, { log: (s) => log.push(s), model: second });
  expect(second.asked.sort()).toEqual(
    records
      .filter((r) => r.category === 'moving_direction')
      .map((r) => r.id)
      .sort(),
  );
  expect(log.join('\n')).toMatch(/cut a torn last line \(\d+ bytes\) left by an interrupted run/);
  expect(log.join('\n')).toContain(
    `resuming ${out}: ${records.length - 6} of ${records.length} samples already done, retrying 6 failed`,
  );
  expect(r2.summary).toMatchObject({ n_failed: 0, n_finished: records.length, n_resumed: records.length - 6 });
  expect(r2.summary.torn_bytes).toBeGreaterThan(0);
  expect(r2.summary.metrics.all).toMatchObject({ acc: 1, p_acc: 1 });
  // The file: whole lines only; the last line of each id is a success.
  const { byId: last, tornBytes } = readSamples(r2.files.samples);
  expect(tornBytes).toBe(0);
  expect([...last.values()].every((l) => !l.error)).toBe(true);
  // A third run has nothing to do.
  const third = new ScriptedModel(() => '<answer>A</answer>');
  const r3 = await runEval({ data, out, model: {}, bootstrap: 0 }, { ...quiet, model: third });
  expect(third.calls).toBe(0);
  expect(r3.summary.metrics).toEqual(r2.summary.metrics);
});

test('refuses to resume into a folder written with other settings, unless told to overwrite', async () => {
  const out = path.join(dir, 'run-c');
  await runEval({ data, out, model: {}, bootstrap: 0 }, { ...quiet, model: new ScriptedModel(() => 'A') });
  await expect(
    runEval(
      { data, out, model: {}, bootstrap: 0, nullOption: true },
      { ...quiet, model: new ScriptedModel(() => 'A') },
    ),
  ).rejects.toMatchObject({
    code: 'ERR_CRPO_RESUME_MISMATCH',
    message: expect.stringContaining('null_option: false -> true'),
  });
  const again = new ScriptedModel(() => 'E');
  const r = await runEval(
    { data, out, model: {}, bootstrap: 0, nullOption: true, overwrite: true },
    { ...quiet, model: again },
  );
  expect(again.asked).toHaveLength(records.length);
  // 'E' is the null option of the 4-way questions (valid, wrong) and invalid elsewhere.
  const md = lines(r.files.samples).filter((l) => l.category === 'moving_direction');
  expect(md.every((l) => l.prediction === 4 && !l.correct)).toBe(true);
  expect(r.summary.metrics.moving_direction!.invalid_rate).toBe(0);
});

test('selection: --limit keeps whole pairs, --category filters', async () => {
  const model = new ScriptedModel(() => 'B');
  const r = await runEval(
    {
      data,
      out: path.join(dir, 'run-d'),
      model: {},
      bootstrap: 0,
      limitPairs: 2,
      categories: ['event_sequence', 'static'],
    },
    { ...quiet, model },
  );
  expect(model.asked.sort()).toEqual(
    records
      .filter((x) => x.pair_id.endsWith('event_sequence-00000') || x.pair_id.endsWith('event_sequence-00001'))
      .map((x) => x.id)
      .sort(),
  );
  expect(r.summary.n_records).toBe(4);
});

test('a model that throws stops the run; what was finished stays on disk', async () => {
  const out = path.join(dir, 'run-e');
  const model = new ScriptedModel((_r, n) => {
    if (n > 5) throw Object.assign(new Error('endpoint refused: HTTP 401'), { code: 'ERR_CRPO_EVAL_ENDPOINT' });
    return '<answer>A</answer>';
  });
  await expect(runEval({ data, out, model: {}, bootstrap: 0, concurrency: 1 }, { ...quiet, model })).rejects.toThrow(
    'endpoint refused: HTTP 401',
  );
  expect(lines(path.join(out, 'samples.jsonl'))).toHaveLength(5);
  expect(fs.existsSync(path.join(out, 'summary.json'))).toBe(false);
});

test('with the OpenAI-compatible model against the mock server: reasoning, 429, 500 and malformed bodies along the way', async () => {
  let k = 0;
  const server = await startMockOpenAI((req) => {
    k++;
    if (k % 7 === 3) return { status: 429, headers: { 'retry-after-ms': '5' } };
    if (k % 7 === 5) return { status: 500 };
    if (k % 11 === 4) return { malformed: '{"choices": [{"message": ' };
    const prompt = (req.body.messages![0].content as { type: string; text?: string }[]).at(-1)!.text!;
    const nOptions = prompt.split('\n').filter((l) => /^[A-Z]\. /.test(l)).length;
    // Answers the last listed option: the null option when it is shown.
    return {
      content: `<think>the frames show motion</think>\nSo the answer is <answer>${LETTERS[nOptions - 1]}</answer>`,
      reasoning_content: 'hidden',
    };
  });
  try {
    const r = await runEval(
      {
        data,
        out: path.join(dir, 'run-f'),
        kind: 'openai',
        model: { model: 'mock-vl', baseURL: server.url, backoffBaseMs: 2, backoffMaxMs: 10, maxRetries: 4 },
        bootstrap: 0,
        nullOption: true,
        concurrency: 4,
      },
      quiet,
    );
    expect(r.summary).toMatchObject({ n_failed: 0, n_finished: records.length, model: 'mock-vl' });
    const got = lines(r.files.samples);
    for (const l of got) {
      const rec = byId(l.id);
      expect(l.prediction).toBe(rec.options.length); // the null option, parsed from inside the reasoning
      expect(l.format_ok).toBe(true);
      expect(l.reasoning).toBe('hidden'); // reasoning_content is kept, not parsed
    }
    expect(server.requests.length).toBeGreaterThan(records.length); // retries happened
    expect(r.summary.metrics.dynamic!.sensitivity).toBe(0); // the same null answer on both members
  } finally {
    await server.close();
  }
});

test('TimeBlind instances (meta.instance = {video, question}) get Acc / Q-Acc / V-Acc / I-Acc in the summary', async () => {
  // Two instances of 2 videos x 2 yes/no questions, videos borrowed from the synthetic set.
  const vids = records
    .filter((r) => r.category === 'moving_direction')
    .slice(0, 4)
    .map((r) => r.video);
  const tb: DyBenchRecord[] = [];
  for (const inst of [0, 1]) {
    for (const v of [0, 1]) {
      for (const q of [0, 1]) {
        tb.push({
          id: `tb${inst}-v${v}-q${q}`,
          pair_id: `tb${inst}`,
          video: vids[inst * 2 + v],
          question: q ? 'Does it move left?' : 'Does it move right?',
          options: ['yes', 'no'],
          answer: (v + q) % 2,
          category: 'other',
          transform: v ? 'reverse' : 'none',
          source: 'timeblind-test',
          meta: { instance: { video: v, question: q } },
        });
      }
    }
  }
  const file = path.join(dir, 'timeblind.jsonl');
  fs.writeFileSync(file, tb.map((r) => JSON.stringify(r)).join('\n') + '\n');
  // Instance 0 all right; instance 1 right except video 1 / question 1.
  const model = new ScriptedModel((r) => {
    const rec = tb.find((x) => x.id === r.id)!;
    return LETTERS[r.id === 'tb1-v1-q1' ? 1 - rec.answer : rec.answer];
  });
  const res = await runEval(
    { data: file, out: path.join(dir, 'run-tb'), model: {}, bootstrap: 0 },
    { ...quiet, model },
  );
  expect(res.summary.timeblind).toEqual({ n_instances: 2, acc: 7 / 8, q_acc: 3 / 4, v_acc: 3 / 4, i_acc: 1 / 2 });
  expect(res.summary.metrics.all).toMatchObject({ n_pairs: 2, p_acc: 1 / 2 }); // P-Acc over a 4-member instance = I-Acc
  expect(fs.readFileSync(res.files.markdown, 'utf8')).toContain(
    'TimeBlind (2 instances): Acc 87.5, Q-Acc 75.0, V-Acc 75.0, I-Acc 50.0.',
  );
});

test('progress lines go to the log; crpo eval --correlate prints Pearson r across run folders', async () => {
  const log: string[] = [];
  const dirs: string[] = [];
  // Three runs whose accuracy and sensitivity differ: right on the first k pairs of each category, constant 'A' elsewhere.
  for (const k of [0, 1, 2]) {
    const out = path.join(dir, `corr-${k}`);
    dirs.push(out);
    const model = new ScriptedModel((r) => {
      const rec = byId(r.id);
      const index = Number(rec.pair_id.slice(-5));
      return index < k ? LETTERS[rec.answer] : k === 2 && rec.id.endsWith('-b') ? 'B' : 'A';
    });
    await runEval({ data, out, model: {}, bootstrap: 0 }, { model, log: (s) => log.push(s), progressEveryMs: 0 });
  }
  expect(log.some((l) => /^eval: \d+\/24 done, acc \d+\.\d%, 0 failed, [\d.]+\/s, eta /.test(l))).toBe(true);
  const { handler } = await import('../../lib/cli/commands/eval');
  const written: string[] = [];
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    written.push(String(s));
    return true;
  });
  try {
    await handler({ correlate: dirs, x: 'all.acc', y: 'all.p_acc' } as unknown as Parameters<typeof handler>[0]);
  } finally {
    spy.mockRestore();
  }
  const summaries = dirs.map((d) => JSON.parse(fs.readFileSync(path.join(d, 'summary.json'), 'utf8')).metrics.all);
  const { pearson } = await import('../../lib/eval/metrics');
  const r = pearson(
    summaries.map((m) => m.acc),
    summaries.map((m) => m.p_acc),
  );
  expect(written.at(-1)).toBe(`Pearson r(all.acc, all.p_acc) over 3 runs = ${r.toFixed(4)}\n`);
  expect(written).toHaveLength(4);
});

test('video files: --frames and --max-pixels shape what the model receives (mp4 through ffmpeg)', async () => {
  // One moving-direction pair as 16-frame 64x48 mp4 clips (the synthetic scene, rendered at that size).
  const pair = records.filter((r) => r.category === 'moving_direction').slice(0, 2);
  const recs: DyBenchRecord[] = [];
  for (const r of pair) {
    const spec = { ...(r.video as Exclude<DyBenchRecord['video'], string>), frames: 16, height: 48, width: 64 };
    const file = path.join(dir, 'mp4', `${r.id}.mp4`);
    await encodeMp4(file, renderSynthetic(spec), [16, 48, 64, 3]);
    recs.push({ ...r, video: path.relative(dir, file) }); // relative to the JSONL's folder
  }
  const file = path.join(dir, 'mp4.jsonl');
  fs.writeFileSync(file, recs.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const shapes: number[][] = [];
  const model = new ScriptedModel((r) => {
    shapes.push([...r.frameShape]);
    expect(r.frames.length).toBe(r.frameShape.reduce((a, b) => a * b, 1));
    return 'A';
  });
  const res = await runEval(
    { data: file, out: path.join(dir, 'run-mp4'), model: {}, bootstrap: 0, frames: 4, maxPixels: 32 * 24 },
    { ...quiet, model },
  );
  expect(res.summary.n_failed).toBe(0);
  expect(shapes).toEqual([
    [4, 24, 32, 3],
    [4, 24, 32, 3],
  ]);
});

test('crpo eval flags and environment: a flag beats CRPO_EVAL_*, which beats OPENAI_*', async () => {
  const server = await startMockOpenAI(() => ({ content: 'A' }));
  const { handler } = await import('../../lib/cli/commands/eval');
  const saved = { ...process.env };
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
  const base = {
    data,
    kind: 'openai',
    nullOption: false,
    concurrency: 4,
    batchSize: 1,
    frames: 8,
    maxPixels: 50176,
    timeout: 10,
    retries: 0,
    backoff: 5,
    maxTokens: 16,
    temperature: 0,
    jpegQuality: 90,
    bootstrap: 0,
    seed: 0,
    lenient: false,
    overwrite: false,
    quiet: true,
    x: 'a',
    y: 'b',
    limit: 1,
  };
  try {
    process.env.OPENAI_BASE_URL = server.url;
    process.env.OPENAI_API_KEY = 'sk-openai';
    process.env.CRPO_EVAL_API_KEY = 'sk-crpo';
    process.env.CRPO_EVAL_MODEL = 'env-model';
    await handler({ ...base, out: path.join(dir, 'env-1') } as unknown as Parameters<typeof handler>[0]);
    expect(server.requests.at(-1)!.body.model).toBe('env-model');
    expect(server.requests.at(-1)!.headers.authorization).toBe('Bearer sk-crpo');
    await handler({
      ...base,
      out: path.join(dir, 'env-2'),
      model: 'flag-model',
      apiKey: 'sk-flag',
    } as unknown as Parameters<typeof handler>[0]);
    expect(server.requests.at(-1)!.body.model).toBe('flag-model');
    expect(server.requests.at(-1)!.headers.authorization).toBe('Bearer sk-flag');
    delete process.env.CRPO_EVAL_API_KEY;
    await handler({ ...base, out: path.join(dir, 'env-3') } as unknown as Parameters<typeof handler>[0]);
    expect(server.requests.at(-1)!.headers.authorization).toBe('Bearer sk-openai');
    delete process.env.OPENAI_BASE_URL;
    await expect(
      handler({ ...base, out: path.join(dir, 'env-4') } as unknown as Parameters<typeof handler>[0]),
    ).rejects.toThrow(
      'no endpoint: pass --base-url (e.g. http://localhost:8000/v1) or set CRPO_EVAL_BASE_URL or OPENAI_BASE_URL',
    );
  } finally {
    spy.mockRestore();
    for (const k of [
      'OPENAI_BASE_URL',
      'OPENAI_API_KEY',
      'CRPO_EVAL_API_KEY',
      'CRPO_EVAL_MODEL',
      'CRPO_EVAL_BASE_URL',
    ]) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    await server.close();
  }
});

test('batches: one answer() call per batch; a clip that cannot be decoded fails only its sample (and is retried on resume)', async () => {
  const out = path.join(dir, 'run-batch');
  const broken = records[3].id;
  const model = new ScriptedModel((r) => LETTERS[byId(r.id).answer]);
  const calls: number[] = [];
  const inner = { answer: model.answer.bind(model) };
  model.answer = async (reqs) => {
    calls.push(reqs.length);
    return inner.answer(reqs);
  };
  const { defaultFrameLoader } = await import('../../lib/eval/frames');
  const real = defaultFrameLoader();
  let fail = true;
  const frameLoader = async (r: DyBenchRecord): ReturnType<typeof real> => {
    if (r.id === broken && fail) throw new Error('truncated clip');
    return real(r);
  };
  const r1 = await runEval(
    { data, out, model: {}, bootstrap: 0, batchSize: 5, concurrency: 2 },
    { ...quiet, model, frameLoader },
  );
  expect(calls.reduce((a, b) => a + b, 0)).toBe(records.length - 1);
  expect(calls.every((n) => n <= 5)).toBe(true);
  expect(calls.length).toBe(Math.ceil(records.length / 5));
  expect(r1.summary.n_failed).toBe(1);
  expect(readSamples(r1.files.samples).byId.get(broken)).toMatchObject({
    error: 'frames: truncated clip',
    prediction: -1,
  });
  fail = false;
  calls.length = 0;
  const r2 = await runEval({ data, out, model: {}, bootstrap: 0, batchSize: 5 }, { ...quiet, model, frameLoader });
  expect(calls).toEqual([1]);
  expect(r2.summary).toMatchObject({ n_failed: 0, n_finished: records.length });
  expect(r2.summary.metrics.all!.acc).toBe(1);
});
