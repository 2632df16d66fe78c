/** `crpo doctor`: what this machine offers crpo, and what is missing with the fix. */
import type { Argv } from 'yargs';
import { doctorReport, formatDoctor } from '../doctor-report';

export function builder(y: Argv): Argv {
  return y.option('json', { type: 'boolean', default: false, describe: 'Print the report as JSON' });
}

export function handler(argv: { json?: boolean }): void {
  const report = doctorReport();
  if (argv.json) {
    const { torch, ...rest } = report;
    const out = torch ? { ...rest, torch: { ...torch, buildConfig: undefined, parallelInfo: undefined } } : rest;
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  } else {
    process.stdout.write(formatDoctor(report) + '\n');
  }
  if (!report.addons.find((a) => a.name === 'core')?.loaded) process.exitCode = 1;
}
