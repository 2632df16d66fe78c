/**
 * Benchmark harness: warm-up, then the median of >= 5 timed runs, a machine description, and
 * results written as JSON (bench/results/<name>.json) and a Markdown section that
 * scripts/run-bench.js places into docs/benchmarks.md between `<!-- bench:<name> -->` markers.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { markdownTable } from '../lib/bench/stats';

export interface Timing {
  medianMs: number;
  minMs: number;
  runs: number;
}

export function time(fn: () => void, opts: { warmup?: number; runs?: number; minTimeMs?: number } = {}): Timing {
  const warmup = opts.warmup ?? 2,
    runs = Math.max(5, opts.runs ?? 7);
  for (let i = 0; i < warmup; i++) fn();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  samples.sort((a, b) => a - b);
  return { medianMs: samples[Math.floor(samples.length / 2)], minMs: samples[0], runs };
}

export async function timeAsync(
  fn: () => Promise<void>,
  opts: { warmup?: number; runs?: number } = {},
): Promise<Timing> {
  const warmup = opts.warmup ?? 2,
    runs = Math.max(5, opts.runs ?? 7);
  for (let i = 0; i < warmup; i++) await fn();
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  samples.sort((a, b) => a - b);
  return { medianMs: samples[Math.floor(samples.length / 2)], minMs: samples[0], runs };
}

export function machine(): Record<string, unknown> {
  const cpu = os.cpus()[0];
  return {
    cpu: cpu ? cpu.model : 'unknown',
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    date: new Date().toISOString(),
  };
}

export function describeMachine(m: Record<string, unknown>): string {
  return `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB, Node ${m.node}, ${m.platform}; ${m.date}`;
}

export function writeResults(name: string, json: unknown, markdown: string): void {
  const dir = path.resolve(__dirname, 'results');
  fs.mkdirSync(dir, { recursive: true });
  for (const [file, text] of [
    [`${name}.json`, JSON.stringify(json, null, 2) + '\n'],
    [`${name}.md`, markdown.trim() + '\n'],
  ]) {
    const tmp = path.join(dir, `${file}.${process.pid}.tmp`);
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, path.join(dir, file));
  }
  process.stdout.write(markdown.trim() + '\n');
}

/** Markdown table (the one `crpo bench` prints: lib/bench/stats.ts). */
export const table = markdownTable;

export const fmt = (x: number, digits = 2): string => (Number.isFinite(x) ? x.toFixed(digits) : String(x));
