/**
 * Summaries of `crpo reproduce` (crpo-method.md sections 7-10): per method, the mean and the
 * spread (sample standard deviation, min-max) over seeds of the held-out paired metrics (DyBench
 * Acc and P-Acc over the dynamic categories, P-Acc per category, spatiotemporal sensitivity,
 * static invariance); a Markdown table laid out like the paper's main table (base model first,
 * then one "+ method" row each); and an SVG of the training curves (correctness reward and CRR
 * per method, mean over seeds) that lib/eval's svgToPng rasterises.
 */
import type { GroupMetrics, PairedMetrics } from '../eval/metrics';

/** One training curve point (means over the step's prompt groups). */
export interface CurvePoint {
  step: number;
  /** Mean correctness of the step's original-branch training rollouts (R_correct); null where not trained (step 0). */
  correct: number | null;
  /** Held-out CRR (mean over held-out pairs of p_o * p_c under sampling, section 5) at saved checkpoints; null between them. */
  crr: number | null;
}

/** One (method, seed) run's outcome. */
export interface RunResult {
  method: string;
  seed: number;
  steps: number;
  curve: CurvePoint[];
  /** Held-out paired metrics after training. */
  metrics: PairedMetrics;
  /**
   * Colour-shortcut answers: among held-out dynamic videos whose object colour names a wrong
   * option (colour index != gold), the share answered with that colour's option (a pure colour
   * reader scores 1; a motion reader about 1/(k-1) or less).
   */
  shortcutRate?: number | null;
  /** Share of held-out predictions that are the null option ("None of the above"; shown to the CRPO rows only). */
  nullRate?: number | null;
  wallMs: number;
}

/** A column of the main table: a metric of one group. */
export interface Column {
  key: string;
  label: string;
  group: 'dynamic' | 'static' | 'reversible_dynamics' | 'moving_direction' | 'event_sequence' | 'all';
  metric: 'acc' | 'p_acc' | 'sensitivity' | 'invariance' | 'shortcut' | 'null';
}

export const COLUMNS: readonly Column[] = [
  { key: 'acc', label: 'Acc', group: 'dynamic', metric: 'acc' },
  { key: 'p_acc', label: 'P-Acc', group: 'dynamic', metric: 'p_acc' },
  { key: 'p_acc_rd', label: 'P-Acc RD', group: 'reversible_dynamics', metric: 'p_acc' },
  { key: 'p_acc_md', label: 'P-Acc MD', group: 'moving_direction', metric: 'p_acc' },
  { key: 'p_acc_es', label: 'P-Acc ES', group: 'event_sequence', metric: 'p_acc' },
  { key: 'sensitivity', label: 'Sensitivity', group: 'dynamic', metric: 'sensitivity' },
  { key: 'invariance', label: 'Invariance', group: 'static', metric: 'invariance' },
  { key: 'static_acc', label: 'Static Acc', group: 'static', metric: 'acc' },
  { key: 'shortcut', label: 'Colour-shortcut answers (lower is better)', group: 'dynamic', metric: 'shortcut' },
  { key: 'null', label: 'Null-option answers', group: 'all', metric: 'null' },
];

export interface Spread {
  mean: number;
  /** Sample standard deviation (n - 1); 0 for one seed. */
  sd: number;
  min: number;
  max: number;
  n: number;
}

export function spread(values: readonly number[]): Spread | null {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length === 0) return null;
  const mean = v.reduce((a, x) => a + x, 0) / v.length;
  const sd = v.length > 1 ? Math.sqrt(v.reduce((a, x) => a + (x - mean) ** 2, 0) / (v.length - 1)) : 0;
  return { mean, sd, min: Math.min(...v), max: Math.max(...v), n: v.length };
}

export function metricOf(r: Pick<RunResult, 'metrics' | 'shortcutRate' | 'nullRate'>, c: Column): number {
  if (c.metric === 'shortcut') return r.shortcutRate ?? NaN;
  if (c.metric === 'null') return r.nullRate ?? NaN;
  const g: GroupMetrics | undefined = r.metrics.groups[c.group];
  const v = g ? g[c.metric] : null;
  return v === null || v === undefined ? NaN : v;
}

export interface MethodSummary {
  method: string;
  seeds: number[];
  columns: Record<string, Spread | null>;
  /** Mean curve over seeds, by step. */
  curve: CurvePoint[];
}

export function summarize(method: string, runs: readonly RunResult[]): MethodSummary {
  const columns: Record<string, Spread | null> = {};
  for (const c of COLUMNS) columns[c.key] = spread(runs.map((r) => metricOf(r, c)));
  const bySteps = new Map<number, { correct: number[]; crr: number[] }>();
  for (const r of runs) {
    for (const p of r.curve) {
      const e = bySteps.get(p.step) ?? { correct: [], crr: [] };
      if (p.correct !== null && Number.isFinite(p.correct)) e.correct.push(p.correct);
      if (p.crr !== null && Number.isFinite(p.crr)) e.crr.push(p.crr);
      bySteps.set(p.step, e);
    }
  }
  const curve = [...bySteps.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([step, e]) => ({
      step,
      correct: e.correct.length ? e.correct.reduce((a, x) => a + x, 0) / e.correct.length : null,
      crr: e.crr.length ? e.crr.reduce((a, x) => a + x, 0) / e.crr.length : null,
    }));
  return { method, seeds: runs.map((r) => r.seed), columns, curve };
}

const pct = (x: number): string => (100 * x).toFixed(1);

export function cell(s: Spread | null): string {
  if (!s) return 'n/a';
  return s.n > 1 ? `${pct(s.mean)} ± ${pct(s.sd)}` : pct(s.mean);
}

/** Display names, in the paper's row order. */
export const METHOD_LABELS: Readonly<Record<string, string>> = {
  base: 'Base model',
  grpo: '+ GRPO',
  'grpo-2g': '+ GRPO (2G rollouts)',
  't-grpo': '+ T-GRPO',
  arrowrl: '+ ArrowRL',
  crpo: '+ CRPO',
  'crpo-no-dual': '+ CRPO w/o dual-branch gradient',
};

/** The main table: rows = base then methods; cells = mean ± sd over seeds, in percent. */
export function mainTable(summaries: readonly MethodSummary[]): string {
  const header = ['method', ...COLUMNS.map((c) => c.label)];
  const lines = [`| ${header.join(' | ')} |`, `| ${header.map((_, i) => (i === 0 ? '---' : '---:')).join(' | ')} |`];
  for (const s of summaries) {
    lines.push(
      `| ${METHOD_LABELS[s.method] ?? s.method} | ${COLUMNS.map((c) => cell(s.columns[c.key])).join(' | ')} |`,
    );
  }
  return lines.join('\n');
}

const COLOURS = ['#4C78A8', '#F58518', '#54A24B', '#B279A2', '#E45756', '#72B7B2', '#9D755D', '#FF9DA6'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Two panels side by side (correctness reward, CRR) with one line per method. */
export function curvesSvg(summaries: readonly MethodSummary[], title: string): string {
  const methods = summaries.filter((s) => s.curve.length > 0);
  const W = 1020,
    H = 460,
    panelW = 400,
    top = 60,
    plotH = 300,
    lefts = [70, 580];
  const smooth = Math.max(1, Math.round(Math.max(1, ...methods.flatMap((s) => s.curve.map((p) => p.step))) / 30));
  const maxStep = Math.max(1, ...methods.flatMap((s) => s.curve.map((p) => p.step)));
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, sans-serif">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="26" font-size="16" text-anchor="middle" fill="#222">${esc(title)}</text>`);
  const panels: { key: 'correct' | 'crr'; label: string }[] = [
    { key: 'correct', label: `correctness reward (training rollouts${smooth > 1 ? `, mean of ${smooth} steps` : ''})` },
    { key: 'crr', label: 'held-out CRR = p_o x p_c (mean over pairs)' },
  ];
  panels.forEach((panel, k) => {
    const left = lefts[k];
    const x = (step: number): number => left + (panelW * step) / maxStep;
    const y = (v: number): number => top + plotH * (1 - v);
    out.push(
      `<text x="${left + panelW / 2}" y="${top - 14}" font-size="13" text-anchor="middle" fill="#222">${esc(panel.label)}</text>`,
    );
    for (let t = 0; t <= 10; t += 2) {
      out.push(
        `<line x1="${left}" x2="${left + panelW}" y1="${y(t / 10)}" y2="${y(t / 10)}" stroke="${t === 0 ? '#444' : '#e3e3e3'}"/>`,
      );
      out.push(
        `<text x="${left - 8}" y="${y(t / 10) + 4}" font-size="11" text-anchor="end" fill="#444">${(t / 10).toFixed(1)}</text>`,
      );
    }
    out.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${y(0)}" stroke="#444"/>`);
    for (let i = 0; i <= 4; i++) {
      const s = Math.round((maxStep * i) / 4);
      out.push(`<text x="${x(s)}" y="${y(0) + 18}" font-size="11" text-anchor="middle" fill="#444">${s}</text>`);
    }
    out.push(
      `<text x="${left + panelW / 2}" y="${y(0) + 36}" font-size="12" text-anchor="middle" fill="#444">training step</text>`,
    );
    methods.forEach((s, i) => {
      let pts = s.curve.filter((p) => p[panel.key] !== null && Number.isFinite(p[panel.key] as number));
      if (!pts.length) return;
      if (panel.key === 'correct' && smooth > 1) {
        // Trailing mean over `smooth` steps: single steps see 8 prompts, too few to read a trend from.
        pts = pts.map((p, j) => {
          const win = pts.slice(Math.max(0, j - smooth + 1), j + 1);
          return { ...p, correct: win.reduce((a, q) => a + (q.correct as number), 0) / win.length };
        });
      }
      const d = pts
        .map(
          (p, j) =>
            `${j ? 'L' : 'M'}${x(p.step).toFixed(1)},${y(Math.max(0, Math.min(1, p[panel.key] as number))).toFixed(1)}`,
        )
        .join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${COLOURS[i % COLOURS.length]}" stroke-width="2"/>`);
    });
  });
  const ly = H - 30;
  let lx = 70;
  methods.forEach((s, i) => {
    const label = (METHOD_LABELS[s.method] ?? s.method).replace(/^\+ /, '');
    out.push(`<rect x="${lx}" y="${ly - 10}" width="14" height="4" fill="${COLOURS[i % COLOURS.length]}"/>`);
    out.push(`<text x="${lx + 20}" y="${ly - 4}" font-size="12" fill="#222">${esc(label)}</text>`);
    lx += 36 + label.length * 7.5;
  });
  out.push(`<text x="${W - 20}" y="${H - 8}" font-size="10" text-anchor="end" fill="#666">mean over seeds</text>`);
  out.push('</svg>');
  return out.join('\n');
}
