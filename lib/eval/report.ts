/**
 * Human-readable outputs of an evaluation run: a Markdown table (Acc / P-Acc per category,
 * sensitivity, invariance, with bootstrap 95% intervals; crpo-method.md sections 8-9) and a bar
 * chart of Acc vs P-Acc per category, drawn as SVG and rasterised to PNG with sharp.
 */
import sharp from 'sharp';
import type { GroupIntervals, GroupMetrics, GroupName, Interval, PairedMetrics, TimeBlindMetrics } from './metrics';

export interface ReportInput {
  model: string;
  data: string;
  metrics: PairedMetrics;
  intervals: Partial<Record<GroupName, GroupIntervals>>;
  level: number;
  n_failed: number;
  null_option: boolean;
  timeblind?: TimeBlindMetrics | null;
}

const LABELS: Record<string, string> = {
  all: 'all',
  dynamic: 'dynamic (DyBench)',
  reversible_dynamics: 'reversible dynamics',
  moving_direction: 'moving direction',
  event_sequence: 'event sequence',
  static: 'static',
  other: 'other',
};

const pct = (v: number): string => (100 * v).toFixed(1);

function cell(v: number | null, iv: Interval | undefined): string {
  if (v === null) return '-';
  return iv ? `${pct(v)} [${pct(iv[0])}, ${pct(iv[1])}]` : pct(v);
}

/** The Markdown report: one row per group, percentages with bootstrap intervals. */
export function markdownReport(r: ReportInput): string {
  const lines = [
    `# Evaluation: ${r.model}`,
    '',
    `Data: \`${r.data}\`${r.null_option ? ' (with the null option "None of the above")' : ''}. Percent, with ${Math.round(r.level * 100)}% bootstrap intervals over pairs.`,
    '',
    '| group | pairs | videos | Acc | P-Acc | sensitivity | invariance | invalid |',
    '|---|---:|---:|---|---|---|---|---:|',
  ];
  for (const [g, m] of Object.entries(r.metrics.groups) as [GroupName, GroupMetrics][]) {
    const iv = r.intervals[g];
    lines.push(
      `| ${LABELS[g] ?? g} | ${m.n_pairs} | ${m.n_samples} | ${cell(m.acc, iv?.acc)} | ${cell(m.p_acc, iv?.p_acc)} | ${cell(m.sensitivity, iv?.sensitivity)} | ${cell(m.invariance, iv?.invariance)} | ${pct(m.invalid_rate)} |`,
    );
  }
  lines.push('');
  lines.push(
    'Acc: per video. P-Acc: a pair counts only if both members are right. Sensitivity: dynamic pairs (gold answer changes) whose two predictions differ. Invariance: static pairs whose two predictions agree. Invalid: answers that were not exactly one option letter.',
  );
  if (r.timeblind) {
    const t = r.timeblind;
    lines.push(
      '',
      `TimeBlind (${t.n_instances} instances): Acc ${pct(t.acc)}, Q-Acc ${pct(t.q_acc)}, V-Acc ${pct(t.v_acc)}, I-Acc ${pct(t.i_acc)}.`,
    );
  }
  if (r.n_failed > 0)
    lines.push(
      '',
      `**${r.n_failed} sample(s) failed after all retries and count as wrong.** Rerun the same command to retry them.`,
    );
  return lines.join('\n') + '\n';
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * Grouped bar chart (Acc, P-Acc) per category with interval whiskers, as SVG. Groups: the
 * categories present, then 'dynamic' when more than one dynamic category is present.
 */
export function chartSvg(r: ReportInput): string {
  const cats = (Object.keys(r.metrics.groups) as GroupName[]).filter((g) => g !== 'all' && g !== 'dynamic');
  const nDynamic = cats.filter((g) => g !== 'static' && g !== 'other').length;
  const groups: GroupName[] = nDynamic > 1 ? [...cats, 'dynamic'] : cats.length ? cats : ['all'];
  const W = Math.max(520, 120 + groups.length * 130);
  const H = 380;
  const left = 60,
    right = 20,
    top = 56,
    bottom = 70;
  const plotW = W - left - right,
    plotH = H - top - bottom;
  const y = (v: number): number => top + plotH * (1 - v);
  const colours = { acc: '#4C78A8', p_acc: '#F58518' };
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, sans-serif">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(
    `<text x="${W / 2}" y="24" font-size="16" text-anchor="middle" fill="#222">${esc(`Acc vs P-Acc per category: ${r.model}`)}</text>`,
  );
  for (let t = 0; t <= 10; t += 2) {
    const v = t / 10;
    out.push(
      `<line x1="${left}" x2="${W - right}" y1="${y(v)}" y2="${y(v)}" stroke="${t === 0 ? '#444' : '#ddd'}" stroke-width="1"/>`,
    );
    out.push(`<text x="${left - 8}" y="${y(v) + 4}" font-size="11" text-anchor="end" fill="#444">${t * 10}</text>`);
  }
  out.push(
    `<text x="16" y="${top + plotH / 2}" font-size="12" fill="#444" text-anchor="middle" transform="rotate(-90 16 ${top + plotH / 2})">percent</text>`,
  );
  const slot = plotW / groups.length;
  const bw = Math.min(44, slot / 3);
  groups.forEach((g, i) => {
    const m = r.metrics.groups[g]!;
    if (g === 'dynamic') {
      const sx = left + slot * i;
      out.push(`<line x1="${sx}" x2="${sx}" y1="${top - 10}" y2="${y(0) + 36}" stroke="#999" stroke-dasharray="4 4"/>`);
    }
    const iv = r.intervals[g];
    const cx = left + slot * (i + 0.5);
    (['acc', 'p_acc'] as const).forEach((key, j) => {
      const v = m[key];
      const x = cx + (j === 0 ? -bw - 2 : 2);
      out.push(
        `<rect x="${x}" y="${y(v)}" width="${bw}" height="${Math.max(0, y(0) - y(v))}" fill="${colours[key]}"/>`,
      );
      const ci = iv?.[key];
      if (ci) {
        const wx = x + bw / 2;
        out.push(`<line x1="${wx}" x2="${wx}" y1="${y(ci[1])}" y2="${y(ci[0])}" stroke="#222" stroke-width="1.5"/>`);
        for (const e of ci)
          out.push(`<line x1="${wx - 5}" x2="${wx + 5}" y1="${y(e)}" y2="${y(e)}" stroke="#222" stroke-width="1.5"/>`);
      }
      out.push(
        `<text x="${x + bw / 2}" y="${Math.min(y(v), ci ? y(ci[1]) : y(v)) - 5}" font-size="11" text-anchor="middle" fill="#222">${pct(v)}</text>`,
      );
    });
    out.push(
      `<text x="${cx}" y="${y(0) + 18}" font-size="12" text-anchor="middle" fill="#222">${esc(LABELS[g] ?? g)}</text>`,
    );
    out.push(
      `<text x="${cx}" y="${y(0) + 34}" font-size="10" text-anchor="middle" fill="#666">${m.n_pairs} pairs</text>`,
    );
  });
  const ly = H - 16;
  out.push(
    `<rect x="${left}" y="${ly - 10}" width="12" height="12" fill="${colours.acc}"/><text x="${left + 18}" y="${ly}" font-size="12" fill="#222">Acc (per video)</text>`,
  );
  out.push(
    `<rect x="${left + 150}" y="${ly - 10}" width="12" height="12" fill="${colours.p_acc}"/><text x="${left + 168}" y="${ly}" font-size="12" fill="#222">P-Acc (both members right)</text>`,
  );
  out.push(
    `<text x="${W - right}" y="${ly}" font-size="10" text-anchor="end" fill="#666">whiskers: ${Math.round(r.level * 100)}% bootstrap interval</text>`,
  );
  out.push('</svg>');
  return out.join('\n');
}

/** Rasterises an SVG to PNG bytes. */
export async function svgToPng(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg), { density: 144 }).png().toBuffer();
}
