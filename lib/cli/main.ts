/**
 * `crpo` command line: yargs with one lazily loaded module per command (see ./commands.ts).
 * A known user error prints one line and exits 1; an unexpected error prints its message and the
 * path of a log file holding the stack, and exits 2.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import yargs, { type Argv } from 'yargs';
import { isUserError } from '../errors';
import { COMMANDS } from './commands';

interface CommandModule {
  builder?: (y: Argv) => Argv;
  handler: (argv: Record<string, unknown>) => Promise<void> | void;
}

function load(modulePath: string): CommandModule {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(path.join(__dirname, modulePath)) as CommandModule;
}

export function reportError(err: unknown): number {
  const e = err as Error & { code?: string };
  if (isUserError(err)) {
    process.stderr.write(`crpo: ${e.message}\n`);
    return 1;
  }
  const logPath = path.join(os.tmpdir(), `crpo-error-${process.pid}-${Date.now()}.log`);
  try {
    fs.writeFileSync(logPath, `${new Date().toISOString()} crpo ${process.argv.slice(2).join(' ')}\n${e?.stack ?? String(err)}\n`);
  } catch {
    /* the message below is still printed */
  }
  process.stderr.write(`crpo: unexpected error${e?.code ? ` (${e.code})` : ''}: ${e?.message ?? String(err)}\n  stack written to ${logPath}\n`);
  return 2;
}

export async function main(args: string[]): Promise<void> {
  let y = yargs(args).scriptName('crpo').strict().demandCommand(1, 'Name a command; `crpo --help` lists them.');
  for (const c of COMMANDS) {
    y = y.command(
      c.command,
      c.describe,
      (b) => {
        const m = load(c.module);
        return m.builder ? m.builder(b) : b;
      },
      async (argv) => {
        try {
          await load(c.module).handler(argv as Record<string, unknown>);
        } catch (err) {
          process.exitCode = reportError(err);
        }
      },
    );
  }
  y = y
    .fail((msg, err) => {
      if (err) {
        process.exitCode = reportError(err);
        return;
      }
      process.stderr.write(`crpo: ${msg}\n`);
      process.stderr.write('Run `crpo --help` for usage.\n');
      process.exit(1);
    })
    .help()
    .wrap(Math.min(110, process.stdout.columns || 100));
  await y.parseAsync();
}
