/**
 * `crpo demo`: the main job on its embedded default. Today: the environment report and the
 * counterfactual-ops demo (flipped / reversed / swapped frames written as PNG).
 */
import type { Argv } from 'yargs';
import { runCounterfactualDemo } from '../../counterfactual/demo';
import { doctorReport, formatDoctor } from '../../doctor';
import { CrpoError } from '../../errors';

export function builder(y: Argv): Argv {
  return y.option('out', { type: 'string', default: 'crpo-demo', describe: 'Output folder' });
}

export async function handler(argv: { out: string }): Promise<void> {
  process.stdout.write(formatDoctor(doctorReport()) + '\n\n');
  process.stdout.write(`Counterfactual ops on a rendered 8-frame clip -> ${argv.out}/\n`);
  const result = await runCounterfactualDemo(argv.out, (s) => process.stdout.write(s + '\n'));
  process.stdout.write(`Contact sheet (rows: original, hflip, reverse, hflip+reverse, swap): ${result.sheet}\n`);
  if (result.checks.some((c) => !c.matchesReference)) {
    throw new CrpoError('ERR_CRPO_MISMATCH', 'a native transform differs from the reference; see the lines above', { userError: false });
  }
}
