/**
 * Task Router benchmark (crpo-method.md section 2): routing 10,000 questions with the rules
 * backend, (1) synchronously with routeRecord (the trainer's path), (2) through the async batch
 * API, (3) `crpo route`'s whole file path in process: strict DyBench load (zod per record),
 * routing, atomic write. Reference measured in the same run: the strict load of the same file
 * alone, the floor any router pays. The target (issue 4) is 10,000 questions in under 5 s.
 * Questions: the 235 labelled ones, with their nouns varied so no two strings are the same.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadRecords } from '../../lib/data/loader';
import { loadLabelled, routeFile, routeRecord, routeRecords } from '../../lib/router';
import { describeMachine, fmt, machine, table, time, timeAsync, writeResults } from '../harness';

const N = 10_000;
const root = path.resolve(__dirname, '..', '..');
const labelled = [
  ...loadLabelled(path.join(root, 'data/router/labelled-dev.jsonl')),
  ...loadLabelled(path.join(root, 'data/router/labelled-heldout.jsonl')),
];
const NOUNS = ['person', 'man', 'woman', 'child', 'robot', 'chef', 'player', 'worker', 'dog', 'cat'];
const questions = Array.from({ length: N }, (_, i) => {
  const l = labelled[i % labelled.length];
  const v = Math.floor(i / labelled.length);
  const q =
    l.question.replace(/\b(person|man|woman|boy|girl|dog|cat|car)\b/, NOUNS[v % NOUNS.length]) +
    (v >= NOUNS.length ? ` (clip ${v})` : '');
  return { question: q, options: l.options };
});

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-bench-router-'));
  const input = path.join(tmp, 'in.jsonl');
  fs.writeFileSync(
    input,
    questions
      .map((q, i) =>
        JSON.stringify({
          id: `b${i}`,
          pair_id: `p${i >> 1}`,
          video: `clips/${i}.mp4`,
          question: q.question,
          options: q.options,
          answer: 0,
          category: 'other',
          transform: 'none',
          source: 'bench',
        }),
      )
      .join('\n') + '\n',
  );

  let sink = 0;
  const sync = time(
    () => {
      for (const q of questions) sink += routeRecord(q, { seed: 0 }).transform.length;
    },
    { warmup: 1, runs: 5 },
  );
  const batch = await timeAsync(
    async () => {
      sink += (await routeRecords(questions, { backend: 'rules', seed: 0 })).routes.length;
    },
    { warmup: 1, runs: 5 },
  );
  const load = await timeAsync(
    async () => {
      sink += (await loadRecords(input, { requirePairs: false, resolvePaths: false })).records.length;
    },
    { warmup: 1, runs: 5 },
  );
  const file = await timeAsync(
    async () => {
      sink += (await routeFile(input, path.join(tmp, 'out.jsonl'), { backend: 'rules', seed: 0 })).stats.records;
    },
    { warmup: 1, runs: 5 },
  );
  fs.rmSync(tmp, { recursive: true, force: true });
  if (sink === 0) throw new Error('nothing routed');

  const m = machine();
  const rows = [
    [
      'routeRecord (sync, rules), 10,000 questions',
      fmt(sync.medianMs, 1),
      fmt((N / sync.medianMs) * 1000, 0),
      fmt(sync.medianMs / load.medianMs, 2),
    ],
    [
      'routeRecords (async batch, rules)',
      fmt(batch.medianMs, 1),
      fmt((N / batch.medianMs) * 1000, 0),
      fmt(batch.medianMs / load.medianMs, 2),
    ],
    [
      'reference: strict DyBench load of the 10,000-record file',
      fmt(load.medianMs, 1),
      fmt((N / load.medianMs) * 1000, 0),
      '1.00',
    ],
    [
      '`crpo route` file path: load + route + atomic write',
      fmt(file.medianMs, 1),
      fmt((N / file.medianMs) * 1000, 0),
      fmt(file.medianMs / load.medianMs, 2),
    ],
  ];
  const md = [
    '### Task Router (`bench/router`)',
    '',
    `Machine: ${describeMachine(m)}. Median of 5 runs after a warm-up. 10,000 questions (the 235 labelled ones with varied nouns).`,
    `Target (issue 4): 10,000 questions routed with the rules backend in under 5 s: **${fmt(file.medianMs / 1000, 3)} s** for the whole file path, ${fmt(sync.medianMs / 1000, 3)} s for routing alone.`,
    '',
    table(['what', 'median ms', 'questions/s', 'x strict load'], rows),
  ].join('\n');
  writeResults('router', { machine: m, n: N, syncMs: sync, batchMs: batch, loadMs: load, fileMs: file }, md);
}

main().catch((err) => {
  process.stderr.write(String(err?.stack ?? err) + '\n');
  process.exit(1);
});
