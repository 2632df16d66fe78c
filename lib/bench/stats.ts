/**
 * Shared pieces of the `crpo bench` commands and the developer benchmarks under bench/: summary
 * statistics of timed samples (median and spread, as nanoGPT-style benchmarks report them after a
 * warm-up), a description of the machine, peak memory, and Markdown tables.
 */
import * as os from 'os';

export interface SampleStats {
  /** Median of the samples (ms). */
  medianMs: number;
  minMs: number;
  maxMs: number;
  /** (max - min) / median: how much the runs disagree (0 for one run). */
  spread: number;
  runs: number;
}

/** Median, min, max and spread of `samples` (ms); an empty list gives NaN figures and runs 0. */
export function summarize(samples: readonly number[]): SampleStats {
  if (samples.length === 0) return { medianMs: NaN, minMs: NaN, maxMs: NaN, spread: NaN, runs: 0 };
  const s = [...samples].sort((a, b) => a - b);
  const n = s.length;
  const median = n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  return {
    medianMs: median,
    minMs: s[0],
    maxMs: s[n - 1],
    spread: median > 0 ? (s[n - 1] - s[0]) / median : 0,
    runs: n,
  };
}

/** Milliseconds since `t0` (process.hrtime.bigint()). */
export function msSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export interface MachineInfo {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  platform: string;
  /** One-minute load average when the description was taken (other work on the machine skews timings). */
  loadAverage1m: number;
  date: string;
}

export function machineInfo(): MachineInfo {
  const cpu = os.cpus()[0];
  return {
    cpu: cpu ? cpu.model.trim() : 'unknown',
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    loadAverage1m: os.loadavg()[0],
    date: new Date().toISOString(),
  };
}

/** Peak resident set size of this process so far, MiB (getrusage maxrss). */
export function peakRssMiB(): number {
  return process.resourceUsage().maxRSS / 1024;
}

export function markdownTable(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const line = (cells: readonly (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

export const fixed = (x: number, digits = 2): string => (Number.isFinite(x) ? x.toFixed(digits) : '-');
