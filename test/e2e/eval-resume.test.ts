/**
 * `crpo eval` end to end, as a child process against the mock OpenAI server: a run killed with
 * SIGKILL mid-way (plus a torn half line, as a crash during a write leaves) is rerun with the same
 * command; the result must equal an uninterrupted run, with every sample present exactly once.
 * The server answers from a hash of the request (same request, same answer) and throws 429 / 500
 * and malformed bodies in between, so the retries are exercised too.
 */
import { spawn, type ChildProcess } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { SyntheticVideoSpec } from '../../lib/data/schema';
import { buildMessages } from '../../lib/eval/openai-model';
import { formatPrompt, LETTERS } from '../../lib/prompt';
import { renderSynthetic, synthesizeRecords } from '../../lib/synth';
import { startMockOpenAI, type MockRequest, type MockReply, type MockServer } from '../fixtures/openai-mock-server';

const ROOT = path.resolve(__dirname, '..', '..');
let dir: string;
let data: string;
let ids: string[];
/**
 * JSON of the chat messages the CLI sends for a record -> record ids. Some synthetic pairs send the
 * same request for both members (a "stays the same size" clip played backwards is the same clip).
 */
const bodyIds = new Map<string, string[]>();
let server: MockServer;
/** Called by the server before it answers request `index` (used to kill the child mid-run). */
let onRequest: (index: number) => void = () => undefined;

function reply(req: MockRequest): MockReply {
  onRequest(req.index);
  if (req.index % 9 === 4) return { status: 429, headers: { 'retry-after-ms': '5' } };
  if (req.index % 9 === 7) return { status: 500 };
  if (req.index % 13 === 6) return { malformed: '{"choices": [{"mess' };
  const h = crypto.createHash('sha256').update(JSON.stringify(req.body.messages)).digest();
  const text = (req.body.messages![0].content as { type: string; text?: string }[]).at(-1)!.text!;
  const n = text.split('\n').filter((l) => /^[A-Z]\. /.test(l)).length;
  // Mostly a tagged answer after some reasoning; sometimes a bare letter; sometimes no answer at all.
  const letter = LETTERS[h[0] % n];
  const style = h[1] % 8;
  return {
    content:
      style === 0
        ? letter
        : style === 1
          ? 'I cannot tell from these frames.'
          : `The object moves; comparing frames...\n<answer>${letter}</answer>`,
    delayMs: 15,
  };
}

function runCli(
  out: string,
  extra: string[] = [],
): {
  child: ChildProcess;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: string }>;
} {
  const child = spawn(
    process.execPath,
    [
      '-r',
      path.join(ROOT, 'scripts/ts-register.js'),
      path.join(ROOT, 'test/fixtures/eval-cli.js'),
      'eval',
      data,
      '--base-url',
      server.url,
      '--model',
      'mock-vl',
      '--out',
      out,
      '--concurrency',
      '2',
      '--backoff',
      '5',
      '--bootstrap',
      '200',
      ...extra,
    ],
    { cwd: dir, env: { ...process.env, OPENAI_API_KEY: 'sk-e2e' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  let stdout = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdout!.on('data', (d) => (stdout += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: string }>(
    (resolve) => child.on('close', (code, signal) => resolve({ code, signal, stderr, stdout })),
  );
  return { child, done };
}

const readLines = (file: string): { id: string; prediction: number; correct: boolean; error?: string }[] =>
  fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-eval-e2e-'));
  const records = synthesizeRecords({ split: 'test', pairs: 5, seed: 9 });
  ids = records.map((r) => r.id);
  data = path.join(dir, 'synth-test.jsonl');
  fs.writeFileSync(data, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  for (const r of records) {
    const v = r.video as SyntheticVideoSpec;
    const messages = await buildMessages({
      id: r.id,
      frames: renderSynthetic(v),
      frameShape: [v.frames, v.height, v.width, 3],
      question: r.question,
      options: r.options,
      prompt: formatPrompt(r.question, r.options),
    });
    const key = JSON.stringify(messages);
    bodyIds.set(key, [...(bodyIds.get(key) ?? []), r.id]);
  }
  expect([...bodyIds.values()].flat().sort()).toEqual([...ids].sort());
  server = await startMockOpenAI(reply);
});
afterAll(async () => {
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a run killed with SIGKILL and rerun equals an uninterrupted run: nothing lost, nothing counted twice', async () => {
  // Reference: uninterrupted.
  const ref = await runCli(path.join(dir, 'ref')).done;
  expect(ref.stderr).not.toMatch(/unexpected error/);
  expect(ref.code).toBe(0);
  expect(ref.stdout).toContain('| moving direction | 5 | 10 |');
  const refLines = readLines(path.join(dir, 'ref', 'samples.jsonl'));
  expect(refLines.map((l) => l.id).sort()).toEqual([...ids].sort());
  expect(new Set(server.requests.flatMap((r) => bodyIds.get(JSON.stringify(r.body.messages))))).toEqual(new Set(ids));
  const refSummary = JSON.parse(fs.readFileSync(path.join(dir, 'ref', 'summary.json'), 'utf8'));

  // Interrupted: killed when the server sees its 25th request (about half of the 40 samples done).
  const out = path.join(dir, 'killed');
  const first = runCli(out);
  const base = server.requests.length;
  onRequest = (index) => {
    if (index - base === 24) first.child.kill('SIGKILL');
  };
  const killed = await first.done;
  onRequest = () => undefined;
  expect(killed.signal).toBe('SIGKILL');
  const partial = readLines(path.join(out, 'samples.jsonl'));
  expect(partial.length).toBeGreaterThan(0);
  expect(partial.length).toBeLessThan(ids.length);
  expect(fs.existsSync(path.join(out, 'summary.json'))).toBe(false);
  // A crash during a write leaves half a line: add one.
  fs.appendFileSync(path.join(out, 'samples.jsonl'), '{"id":"' + ids[ids.length - 1] + '","pair_id":"x","categ');

  // Rerun the same command.
  const before = server.requests.length;
  const second = await runCli(out).done;
  expect(second.code).toBe(0);
  expect(second.stderr).toContain(`resuming ${out}: ${partial.length} of ${ids.length} samples already done`);
  expect(second.stderr).toMatch(/cut a torn last line \(\d+ bytes\) left by an interrupted run/);
  // It asked only for what was missing (plus retries of refused requests): each request is mapped
  // back to its sample by rebuilding the exact messages the CLI sends for every record.
  const askedAgain = server.requests.slice(before).map((r) => bodyIds.get(JSON.stringify(r.body.messages)));
  expect(askedAgain.every((list) => list !== undefined)).toBe(true);
  const finishedBefore = new Set(partial.map((l) => l.id));
  // Every request of the rerun is for a sample that was not finished ...
  expect(askedAgain.filter((list) => list!.every((id) => finishedBefore.has(id)))).toEqual([]);
  // ... and every unfinished sample was asked.
  expect(new Set(askedAgain.flat().filter((id) => !finishedBefore.has(id!)))).toEqual(
    new Set(ids.filter((id) => !finishedBefore.has(id))),
  );

  const final = readLines(path.join(out, 'samples.jsonl'));
  const counts = new Map<string, number>();
  for (const l of final) counts.set(l.id, (counts.get(l.id) ?? 0) + 1);
  expect([...counts.keys()].sort()).toEqual([...ids].sort());
  expect([...counts.values()].every((c) => c === 1)).toBe(true);
  expect(final.every((l) => !l.error)).toBe(true);
  const refById = new Map(refLines.map((l) => [l.id, l]));
  for (const l of final)
    expect([l.id, l.prediction, l.correct]).toEqual([l.id, refById.get(l.id)!.prediction, refById.get(l.id)!.correct]);
  const summary = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8'));
  expect(summary.metrics).toEqual(refSummary.metrics);
  expect(summary.intervals).toEqual(refSummary.intervals);
  expect(summary).toMatchObject({
    n_records: ids.length,
    n_finished: ids.length,
    n_failed: 0,
    n_resumed: partial.length,
  });
  expect(fs.readFileSync(path.join(out, 'results.md'), 'utf8')).toBe(
    fs.readFileSync(path.join(dir, 'ref', 'results.md'), 'utf8').replace(path.join(dir, 'ref'), out),
  );
  expect(fs.readFileSync(path.join(out, 'chart.png')).subarray(1, 4).toString()).toBe('PNG');
  // The key never lands in the run record.
  expect(fs.readFileSync(path.join(out, 'run.json'), 'utf8')).not.toContain('sk-e2e');
});

test('user errors print one line and exit 1', async () => {
  const r = runCli(path.join(dir, 'bad'), ['--kind', 'checkpoint', '--checkpoint', 'runs/x']);
  const res = await r.done;
  expect(res.code).toBe(1);
  expect(res.stderr.trim()).toBe('crpo: --checkpoint runs/x: no such folder');
});
