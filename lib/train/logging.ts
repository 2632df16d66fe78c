/**
 * What a training run shows and writes: a progress bar on stderr (ETA, step time, main rewards),
 * per-step metrics and validation lines as JSONL (`{"step": n, ...}`, fsynced), rollout dumps,
 * and PNG plots of the curves at the end (SVG rasterised with sharp). Lines are appended without
 * a per-line fsync; `sync()` runs before every checkpoint, so everything up to a checkpoint is
 * durable, and on resume the lines past the checkpoint's step are cut so the logs match an
 * uninterrupted run. Only rank 0 writes.
 */
import * as fs from 'fs';
import * as path from 'path';
import { writeFileAtomicSync } from '../data/jsonl';
import { svgToPng } from '../eval/report';

export type MetricLine = Record<string, number | string | boolean | null>;

/** Keeps only lines whose `step` is <= `step` (atomic rewrite); a torn last line is dropped. */
export function truncateJsonl(file: string, step: number): void {
  if (!fs.existsSync(file)) return;
  const keep: string[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      const v = JSON.parse(line) as { step?: number };
      if (typeof v.step === 'number' && v.step <= step) keep.push(line);
    } catch {
      /* torn tail */
    }
  }
  writeFileAtomicSync(file, keep.length ? keep.join('\n') + '\n' : '');
}

/** Appends whole JSON lines to an open file; fsync on demand. */
class LineFile {
  private readonly fd: number;
  constructor(readonly file: string) {
    this.fd = fs.openSync(file, 'a');
  }
  append(values: unknown[]): void {
    if (values.length) fs.writeSync(this.fd, values.map((v) => JSON.stringify(v)).join('\n') + '\n');
  }
  sync(): void {
    fs.fsyncSync(this.fd);
  }
  close(): void {
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
  }
}

export class RunLog {
  private constructor(
    readonly dir: string,
    private readonly metrics: LineFile | undefined,
    private readonly val: LineFile | undefined,
    private readonly rollouts: LineFile | undefined,
  ) {}

  /** Opens the run's logs; `resumeStep` cuts lines written after that checkpoint; `write` false = a non-zero rank. */
  static async open(dir: string, resumeStep: number, write: boolean, finished = false): Promise<RunLog> {
    if (!write) return new RunLog(dir, undefined, undefined, undefined);
    fs.mkdirSync(dir, { recursive: true });
    const files = ['metrics.jsonl', 'val.jsonl', 'rollouts.jsonl'].map((f) => path.join(dir, f));
    for (const f of files) {
      // A finished run's final validation (written after its last checkpoint) is redone.
      if (resumeStep >= 0) truncateJsonl(f, finished && f.endsWith('val.jsonl') ? resumeStep - 1 : resumeStep);
      else fs.rmSync(f, { force: true });
    }
    const [m, v, r] = files.map((f) => new LineFile(f));
    return new RunLog(dir, m, v, r);
  }

  async step(line: MetricLine): Promise<void> {
    this.metrics?.append([line]);
  }

  async validation(line: MetricLine): Promise<void> {
    this.val?.append([line]);
  }

  async dump(lines: unknown[]): Promise<void> {
    this.rollouts?.append(lines);
  }

  /** Makes every line written so far durable (called before each checkpoint). */
  sync(): void {
    this.metrics?.sync();
    this.val?.sync();
    this.rollouts?.sync();
  }

  async close(): Promise<void> {
    this.metrics?.close();
    this.val?.close();
    this.rollouts?.close();
  }
}

/** One-line progress with ETA on stderr (a TTY redraws in place; otherwise a line per ~10%). */
export class Progress {
  private readonly t0 = Date.now();
  private lastPrinted = -1;
  constructor(
    private readonly total: number,
    private readonly start: number,
    private readonly enabled: boolean,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {}

  update(step: number, stepSeconds: number, info: Record<string, number>): void {
    if (!this.enabled) return;
    const done = step - this.start;
    const elapsed = (Date.now() - this.t0) / 1000;
    const eta = done > 0 ? (elapsed / done) * (this.total - step) : 0;
    const width = 24,
      filled = Math.round((step / Math.max(1, this.total)) * width);
    const bar = '='.repeat(filled) + ' '.repeat(width - filled);
    const parts = Object.entries(info).map(([k, v]) => `${k} ${v.toFixed(3)}`);
    const line = `step ${step}/${this.total} [${bar}] ${stepSeconds.toFixed(2)} s/step ETA ${eta.toFixed(0)} s | ${parts.join(' | ')}`;
    if (this.stream.isTTY) {
      this.stream.write(`\r${line.slice(0, (this.stream.columns ?? 160) - 1)}\x1b[K`);
      if (step === this.total) this.stream.write('\n');
    } else {
      const decile = Math.floor((step / Math.max(1, this.total)) * 10);
      if (decile !== this.lastPrinted || step === this.total) {
        this.lastPrinted = decile;
        this.stream.write(line + '\n');
      }
    }
  }
}

function readJsonl(file: string): MetricLine[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as MetricLine);
}

/** An SVG small-multiples chart: one panel per series, x = step. */
export function curvesSvg(title: string, series: { name: string; points: [number, number][] }[]): string {
  const cols = 3,
    pw = 300,
    ph = 170,
    pad = 36;
  const rows = Math.max(1, Math.ceil(series.length / cols));
  const W = cols * pw,
    H = rows * ph + 30;
  const colours = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2', '#7f7f7f'];
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14" fill="#222">${title}</text>`,
  ];
  series.forEach((s, i) => {
    const x0 = (i % cols) * pw + pad,
      y0 = 30 + Math.floor(i / cols) * ph + 10,
      w = pw - pad - 12,
      h = ph - 46;
    const pts = s.points.filter(([, y]) => Number.isFinite(y));
    out.push(`<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="none" stroke="#bbb"/>`);
    out.push(`<text x="${x0}" y="${y0 - 3}" font-size="11" fill="#222">${s.name}</text>`);
    if (pts.length === 0) return;
    const xs = pts.map((p) => p[0]),
      ys = pts.map((p) => p[1]);
    const xmin = Math.min(...xs),
      xmax = Math.max(...xs, xmin + 1);
    let ymin = Math.min(...ys),
      ymax = Math.max(...ys);
    if (ymax - ymin < 1e-9) {
      ymin -= 0.5;
      ymax += 0.5;
    }
    const X = (x: number) => x0 + ((x - xmin) / (xmax - xmin)) * w,
      Y = (y: number) => y0 + h - ((y - ymin) / (ymax - ymin)) * h;
    out.push(
      `<polyline fill="none" stroke="${colours[i % colours.length]}" stroke-width="1.6" points="${pts.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(' ')}"/>`,
    );
    if (pts.length <= 12)
      for (const [x, y] of pts)
        out.push(
          `<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="2.5" fill="${colours[i % colours.length]}"/>`,
        );
    out.push(
      `<text x="${x0 - 3}" y="${y0 + 9}" font-size="9" text-anchor="end" fill="#555">${ymax.toPrecision(3)}</text>`,
    );
    out.push(
      `<text x="${x0 - 3}" y="${y0 + h}" font-size="9" text-anchor="end" fill="#555">${ymin.toPrecision(3)}</text>`,
    );
    out.push(
      `<text x="${x0}" y="${y0 + h + 12}" font-size="9" fill="#555">${xmin}</text><text x="${x0 + w}" y="${y0 + h + 12}" font-size="9" text-anchor="end" fill="#555">step ${xmax}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n');
}

/** Writes training.png (per-step curves) and validation.png (Acc / P-Acc / sensitivity / invariance) into the run folder. */
export async function writePlots(dir: string, title: string): Promise<string[]> {
  const metrics = readJsonl(path.join(dir, 'metrics.jsonl'));
  const val = readJsonl(path.join(dir, 'val.jsonl'));
  const written: string[] = [];
  const pick = (lines: MetricLine[], keys: string[]) =>
    keys
      .filter((k) => lines.some((l) => typeof l[k] === 'number'))
      .map((k) => ({
        name: k,
        points: lines
          .filter((l) => typeof l[k] === 'number')
          .map((l) => [Number(l.step), Number(l[k])] as [number, number]),
      }));
  const trainKeys = [
    'orig/reward',
    'orig/correct',
    'cf/reward',
    'cf/behave',
    'crr',
    'zero_variance_share',
    'kl',
    'entropy',
    'clip_fraction',
    'grad_norm',
    'lr',
    'step_seconds',
  ];
  if (metrics.length) {
    const f = path.join(dir, 'training.png');
    writeFileAtomicSync(f, await svgToPng(curvesSvg(`${title}: training`, pick(metrics, trainKeys))));
    written.push(f);
  }
  if (val.length) {
    const f = path.join(dir, 'validation.png');
    writeFileAtomicSync(
      f,
      await svgToPng(
        curvesSvg(
          `${title}: validation (held-out pairs)`,
          pick(val, ['acc', 'p_acc', 'sensitivity', 'invariance', 'dynamic/acc', 'dynamic/p_acc']),
        ),
      ),
    );
    written.push(f);
  }
  return written;
}
