/**
 * `crpo route` end to end (crpo-method.md section 2), running the real CLI in a child process:
 * the rules backend on a DyBench file, `crpo route eval`, a bad input line, and an LLM run killed
 * with SIGKILL in the middle and resumed: no record lost, no question answered twice, a torn
 * cache line reported.
 */
import { spawn, spawnSync, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { startMockOpenAI, type MockReply, type MockRequest } from '../fixtures/openai-mock-server';
import { loadLabelled, Route } from '../../lib/router';

const ROOT = path.join(__dirname, '..', '..');
const CLI = path.join(__dirname, 'router-helpers', 'cli.js');
let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-router-cli-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// 14 questions spread over the dev part (all four types).
const labels = loadLabelled(path.join(ROOT, 'data', 'router', 'labelled-dev.jsonl'))
  .filter((_, i) => i % 9 === 4)
  .slice(0, 14);

function writeInput(file: string): void {
  const recs = labels.map((l, i) => ({
    id: `q${i}`,
    pair_id: `p${i >> 1}`,
    video: `clips/${i}.mp4`,
    question: l.question,
    options: l.options,
    answer: 0,
    category: 'other',
    transform: i % 2 ? 'hflip' : 'none',
    source: 'router-test',
  }));
  fs.writeFileSync(file, recs.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

function run(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd: tmp,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 90_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Like run, without blocking this process (the mock server lives here). */
function runAsync(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [CLI, ...args], { cwd: tmp, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('error', reject);
    c.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

function readOut(file: string): { id: string; category: string; transform: string; route: Route }[] {
  return fs
    .readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
}

test('route (rules) adds a valid route to every record and leaves category/transform alone; route eval prints accuracy', () => {
  const input = path.join(tmp, 'in.jsonl');
  writeInput(input);
  const r = run(['route', input, '-o', 'out.jsonl', '--seed', '5']);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/^routed 14 record\(s\) -> out\.jsonl in [0-9.]+ s \(backend rules\)/);
  const out = readOut(path.join(tmp, 'out.jsonl'));
  expect(out.map((o) => o.id)).toEqual(labels.map((_, i) => `q${i}`));
  out.forEach((o, i) => {
    expect(Route.parse(o.route)).toEqual(o.route);
    expect(o.category).toBe('other');
    expect(o.transform).toBe(i % 2 ? 'hflip' : 'none');
  });
  const meta = JSON.parse(fs.readFileSync(path.join(tmp, 'out.jsonl.meta.json'), 'utf8'));
  expect(meta.config).toMatchObject({ backend: 'rules', seed: 5 });
  expect(JSON.stringify(meta)).not.toMatch(/apiKey/);

  const e = run(['route', 'eval', path.join(ROOT, 'data', 'router', 'labelled-heldout.jsonl'), '--errors']);
  expect(e.status).toBe(0);
  expect(e.stdout).toMatch(/rules backend, split 'heldout': \d+ questions\n {2}type accuracy +\d+\.\d%/);
  expect(e.stdout).toMatch(/transform validity +\d+\.\d%/);
  expect(e.stdout).toMatch(/confusion \(rows: truth, columns: predicted\)/);
});

test('a bad record is reported as file:line:field and exits 1', () => {
  const input = path.join(tmp, 'bad.jsonl');
  fs.writeFileSync(
    input,
    JSON.stringify({
      id: 'a',
      pair_id: 'p',
      video: 'v.mp4',
      question: 'Is it opening?',
      options: ['yes', 'no'],
      answer: 0,
      category: 'other',
      transform: 'none',
      source: 's',
    }) +
      '\n' +
      JSON.stringify({
        id: 'b',
        pair_id: 'p',
        video: 'v.mp4',
        question: 'Q?',
        options: 'yes',
        answer: 0,
        category: 'other',
        transform: 'none',
        source: 's',
      }) +
      '\n',
  );
  const r = run(['route', input, '-o', 'bad-out.jsonl']);
  expect(r.status).toBe(1);
  expect(r.stderr).toContain(`${input}:2:options:`);
  expect(fs.existsSync(path.join(tmp, 'bad-out.jsonl'))).toBe(false);
});

test('an LLM run killed with SIGKILL resumes from the cache: no record lost, none answered twice', async () => {
  const input = path.join(tmp, 'llm-in.jsonl');
  writeInput(input);
  const cache = path.join(tmp, 'llm-cache.jsonl');
  const answered: string[] = [];
  let phase: 'first' | 'hold' | 'second' = 'first';
  const held: ((r: MockReply) => void)[] = [];
  const FIRST = 5;
  const byQuestion = new Map(labels.map((l) => [l.question, l]));
  const reply = (req: MockRequest): MockReply => {
    const msgs = req.body.messages ?? [];
    const q = /^Question: (.*)$/m.exec(String(msgs[msgs.length - 1]?.content ?? ''))?.[1] ?? '';
    answered.push(q);
    const l = byQuestion.get(q);
    const axis = l?.type === 'spatiotemporal' ? 'mixed' : null;
    return {
      content: `<think>thinking about ${q}</think>${JSON.stringify({ type: l?.type ?? 'static', axis, rationale: 'mock' })}`,
    };
  };
  const server = await startMockOpenAI((req) => {
    if (phase === 'first' && answered.length < FIRST) return reply(req);
    if (phase !== 'second') {
      phase = 'hold';
      // Never answered while the first child lives: it is killed with these requests in flight.
      return new Promise<MockReply>((resolve) => held.push(resolve));
    }
    return reply(req);
  });
  const args = [
    'route',
    input,
    '-o',
    'llm-out.jsonl',
    '--backend',
    'llm',
    '--base-url',
    server.url,
    '--model',
    'mock-r1',
    '--cache',
    cache,
    '--concurrency',
    '2',
    '--backoff-ms',
    '1',
  ];
  try {
    const child: ChildProcess = spawn(process.execPath, [CLI, ...args], {
      cwd: tmp,
      env: { ...process.env, OPENAI_API_KEY: 'test' },
      stdio: 'ignore',
    });
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, sig) => resolve(sig)));
    // Wait until the answered questions are durably cached and the next requests are in flight.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const lines = fs.existsSync(cache) ? fs.readFileSync(cache, 'utf8').split('\n').filter(Boolean).length : 0;
      if (lines === FIRST && held.length > 0) break;
      if (Date.now() > deadline)
        throw new Error(`first run did not reach ${FIRST} cached answers (has ${lines}, held ${held.length})`);
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    expect(fs.existsSync(path.join(tmp, 'llm-out.jsonl'))).toBe(false);
    phase = 'second';
    for (const h of held) h({ status: 500 }); // goes nowhere: the client is gone
    // A write torn by a crash at the end of the cache.
    const torn = '{"key":"0123';
    fs.appendFileSync(cache, torn);

    const r = await runAsync(args, { OPENAI_API_KEY: 'test' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(
      new RegExp(`from cache ${FIRST}; LLM requests ${labels.length - FIRST}; invalid-reply fallbacks 0`),
    );
    expect(r.stdout).toContain(`cut a torn last line (${torn.length} bytes) left by an interrupted run`);
    const out = readOut(path.join(tmp, 'llm-out.jsonl'));
    expect(new Set(labels.map((l) => l.type)).size).toBe(4);
    expect(out.map((o) => o.id)).toEqual(labels.map((_, i) => `q${i}`));
    out.forEach((o, i) => expect(o.route).toMatchObject({ type: labels[i].type, backend: 'llm', model: 'mock-r1' }));
    // Every question was answered exactly once over both runs.
    expect([...answered].sort()).toEqual(labels.map((l) => l.question).sort());
  } finally {
    await server.close();
  }
});
