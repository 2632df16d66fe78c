/**
 * Evaluation benchmark: (1) the pair bootstrap at DyBench scale (1,507 pairs), the aggregated
 * fast path against rebuilding every resample and recomputing the metrics from samples (the slow
 * twin of the tests), same process, same run; (2) the runner's own overhead per sample with an
 * instant in-process model (fsynced appends included); (3) end-to-end samples/s against the local
 * mock OpenAI server answering at once, 8 frames of 224x224 sent as JPEG, by concurrency.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { DyBenchRecord } from '../../lib/data/schema';
import { bootstrapIntervals, computeMetrics, groupSeed, seededRandom, type ScoredSample } from '../../lib/eval/metrics';
import type { AnswerModel, AnswerRequest, AnswerResponse } from '../../lib/eval/model';
import { runEval } from '../../lib/eval/runner';
import { synthesizeRecords } from '../../lib/synth';
import { startMockOpenAI } from '../../test/fixtures/openai-mock-server';
import { describeMachine, fmt, machine, table, time, writeResults } from '../harness';

const CATS = ['reversible_dynamics', 'moving_direction', 'event_sequence'] as const;

function dybenchScale(): ScoredSample[] {
  const rand = seededRandom(1);
  const out: ScoredSample[] = [];
  for (let p = 0; p < 1507; p++) {
    const category = CATS[p % 3];
    const k = category === 'event_sequence' ? 2 : category === 'moving_direction' ? 4 : 3;
    const a = Math.floor(rand() * k);
    const b = (a + 1 + Math.floor(rand() * (k - 1))) % k;
    for (const [m, ans] of [
      ['a', a],
      ['b', b],
    ] as const) {
      out.push({
        id: `${p}${m}`,
        pair_id: `p${p}`,
        category,
        answer: ans,
        prediction: rand() < 0.7 ? ans : rand() < 0.1 ? -1 : Math.floor(rand() * k),
      });
    }
  }
  return out;
}

/** Slow twin: resample pair ids, rebuild the sample list, recompute every metric from samples. */
function slowBootstrap(samples: ScoredSample[], iterations: number, seed: number): void {
  const groups: Record<string, ScoredSample[]> = { all: samples, dynamic: samples };
  for (const c of CATS) groups[c] = samples.filter((s) => s.category === c);
  for (const [g, subset] of Object.entries(groups)) {
    const members = new Map<string, ScoredSample[]>();
    for (const s of subset) members.set(s.pair_id, [...(members.get(s.pair_id) ?? []), s]);
    const ids = [...members.keys()];
    const rand = seededRandom(groupSeed(seed, g));
    for (let b = 0; b < iterations; b++) {
      const re: ScoredSample[] = [];
      for (let k = 0; k < ids.length; k++) {
        const pid = ids[Math.floor(rand() * ids.length)];
        for (const s of members.get(pid)!) re.push({ ...s, id: `${s.id}#${k}`, pair_id: `${pid}#${k}` });
      }
      computeMetrics(re);
    }
  }
}

class InstantModel implements AnswerModel {
  readonly name = 'instant';
  async answer(requests: AnswerRequest[]): Promise<AnswerResponse[]> {
    return requests.map(() => ({ raw: '<answer>A</answer>', latencyMs: 0 }));
  }
}

async function main(): Promise<void> {
  const m = machine();
  const samples = dybenchScale();
  const iters = 200;
  const fast = time(() => void bootstrapIntervals(samples, { iterations: iters, seed: 0 }), { warmup: 1, runs: 5 });
  const slow = time(() => slowBootstrap(samples, iters, 0), { warmup: 1, runs: 5 });
  const full = time(() => void bootstrapIntervals(samples, { iterations: 1000, seed: 0 }), { warmup: 1, runs: 5 });

  // Runner and endpoint throughput on 96 records (48 pairs), frames replaced by 8 x 224 x 224.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crpo-eval-bench-'));
  const records: DyBenchRecord[] = synthesizeRecords({ split: 'test', pairs: 12, seed: 2 });
  const data = path.join(dir, 'data.jsonl');
  fs.writeFileSync(data, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const [T, H, W] = [8, 224, 224];
  const frames = new Uint8Array(T * H * W * 3);
  for (let i = 0; i < frames.length; i++) frames[i] = (i * 2654435761) >>> 24; // textured: JPEG has work to do
  const frameLoader = async (): Promise<{ frames: Uint8Array; shape: [number, number, number, 3] }> => ({
    frames,
    shape: [T, H, W, 3],
  });
  const quiet = { log: (): void => undefined, frameLoader };
  let n = 0;
  const rows: (string | number)[][] = [];
  for (const concurrency of [1, 4]) {
    const t0 = process.hrtime.bigint();
    await runEval(
      { data, out: path.join(dir, `instant-${n++}`), model: {}, bootstrap: 0, concurrency },
      { ...quiet, model: new InstantModel() },
    );
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    rows.push([
      'runner only (instant in-process model)',
      concurrency,
      records.length,
      fmt(records.length / s, 1),
      fmt((1000 * s) / records.length, 2),
    ]);
  }
  const server = await startMockOpenAI(() => ({ content: 'ok <answer>A</answer>' }));
  try {
    for (const concurrency of [1, 4, 8]) {
      const t0 = process.hrtime.bigint();
      await runEval(
        {
          data,
          out: path.join(dir, `mock-${n++}`),
          kind: 'openai',
          model: { model: 'mock', baseURL: server.url },
          bootstrap: 0,
          concurrency,
        },
        quiet,
      );
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      rows.push([
        'OpenAI client + JPEG + local mock server',
        concurrency,
        records.length,
        fmt(records.length / s, 1),
        fmt((1000 * s) / records.length, 2),
      ]);
    }
  } finally {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }

  const md = [
    '### Evaluation (`bench/eval`)',
    '',
    `Machine: ${describeMachine(m)}.`,
    '',
    `Pair bootstrap at DyBench scale (1,507 pairs, 3,014 samples, 5 rows: all, dynamic, 3 categories), median of 5 runs:`,
    '',
    table(
      ['implementation', 'resamples', 'median ms', 'ms per resample', 'speed-up'],
      [
        [
          'rebuild each resample + computeMetrics (slow twin)',
          iters,
          fmt(slow.medianMs, 1),
          fmt(slow.medianMs / iters, 3),
          '1.0',
        ],
        [
          'aggregated pair counts (bootstrapIntervals)',
          iters,
          fmt(fast.medianMs, 1),
          fmt(fast.medianMs / iters, 3),
          fmt(slow.medianMs / fast.medianMs, 1),
        ],
        [
          'aggregated pair counts (bootstrapIntervals), default',
          1000,
          fmt(full.medianMs, 1),
          fmt(full.medianMs / 1000, 3),
          '-',
        ],
      ],
    ),
    '',
    `Runner throughput on ${records.length} samples, 8 frames of 224x224 each (one run each; includes loading the data, fsynced appends and writing the outputs):`,
    '',
    table(['path', 'concurrency', 'samples', 'samples/s', 'ms/sample'], rows),
    '',
    'A served model adds its own latency; with `--concurrency c` the run takes about samples x latency / c.',
  ].join('\n');
  writeResults(
    'eval',
    { machine: m, bootstrap: { iterations: iters, slow, fast, full1000: full }, throughput: rows },
    md,
  );
}

main().catch((err) => {
  process.stderr.write(String(err?.stack ?? err) + '\n');
  process.exit(1);
});
