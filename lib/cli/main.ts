/**
 * `crpo` command line: yargs with one lazily loaded module per command (see ./commands.ts).
 * A known user error prints one line and exits 1: a CrpoError marked as the user's, a bad flag
 * (unknown, missing, or a number flag given something else), or a file system error on a path
 * the user named (missing, a folder where a file was expected, no permission, disk full). Any
 * other error prints its message and the path of a log file holding the stack, and exits 2;
 * `--verbose` (or CRPO_VERBOSE=1) prints the stack of any error too.
 * `run(args)` is the same without exiting the process (for tests and embedding).
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

/** File system errors about a path: the user named a wrong one (printed as one line). */
const PATH_ERRORS: Record<string, string> = {
  ENOENT: 'no such file or folder',
  EISDIR: 'is a folder, expected a file',
  ENOTDIR: 'a part of the path is a file, expected a folder',
  EEXIST: 'already exists',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on the device',
  ENAMETOOLONG: 'name too long',
  ELOOP: 'too many symbolic links',
};

/** A bad flag or command line (from yargs): one line, exit 1. */
class UsageError extends Error {
  readonly userError = true;
}

export function reportError(err: unknown, verbose = process.env.CRPO_VERBOSE === '1'): number {
  const e = err as Error & { code?: string; path?: string; syscall?: string };
  if (isUserError(err)) {
    process.stderr.write(`crpo: ${e.message}\n${verbose && e.stack ? `${e.stack}\n` : ''}`);
    if (err instanceof UsageError) process.stderr.write('Run `crpo <command> --help` for usage.\n');
    return 1;
  }
  if (e && typeof e.code === 'string' && PATH_ERRORS[e.code] && typeof e.path === 'string') {
    process.stderr.write(
      `crpo: ${e.path}: ${PATH_ERRORS[e.code]} (${e.syscall ?? 'fs'} ${e.code}); check the ` +
        `path${verbose && e.stack ? `\n${e.stack}` : ''}\n`,
    );
    return 1;
  }
  const logPath = path.join(os.tmpdir(), `crpo-error-${process.pid}-${Date.now()}.log`);
  try {
    fs.writeFileSync(
      logPath,
      `${new Date().toISOString()} crpo ${process.argv.slice(2).join(' ')}\n${e?.stack ?? String(err)}\n`,
    );
  } catch {
    /* the message below is still printed */
  }
  process.stderr.write(
    `crpo: unexpected error${e?.code ? ` (${e.code})` : ''}: ${e?.message ?? String(err)}\n  ` +
      `stack written to ${logPath}\n${verbose && e?.stack ? `${e.stack}\n` : ''}`,
  );
  return 2;
}

/**
 * Number flags given something that is not a number (yargs turns it into NaN), or given twice
 * (yargs makes an array of them; no number flag of crpo takes a list): one usage error naming them.
 */
function checkNumbers(argv: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(argv)) {
    if (
      !k.includes('_') &&
      !/[A-Z]/.test(k) &&
      Array.isArray(v) &&
      v.length > 1 &&
      v.every((x) => typeof x === 'number')
    ) {
      throw new UsageError(`--${k} given ${v.length} times (${v.join(', ')}); give it once`);
    }
  }
  const bad = Object.entries(argv)
    .filter(
      ([k, v]) =>
        !k.includes('_') &&
        !/[A-Z]/.test(k) &&
        ((typeof v === 'number' && Number.isNaN(v)) ||
          (Array.isArray(v) && v.some((x) => typeof x === 'number' && Number.isNaN(x)))),
    )
    .map(([k]) => `--${k}`);
  if (bad.length) throw new UsageError(`${bad.join(', ')}: expected a number`);
}

/**
 * A hint for a known mix-up: `crpo synth --frames N` (in synth, --frames is the switch for writing
 * frame folders and --num-frames the count; elsewhere --frames is a count).
 */
function flagHint(args: readonly string[], msg: string): string {
  const i = args.indexOf('--frames');
  if (
    args[0] === 'synth' &&
    i >= 0 &&
    /^\d+$/.test(args[i + 1] ?? '') &&
    msg.includes(`Unknown argument: ${args[i + 1]}`)
  ) {
    return `; in crpo synth, --frames is the switch for writing frame folders: the frame count is --num-frames ${args[i + 1]}`;
  }
  return '';
}

/** Runs `crpo <args>` and resolves with the exit code (the process is left running). */
export async function run(args: string[]): Promise<number> {
  const verbose = args.includes('--verbose') || process.env.CRPO_VERBOSE === '1';
  const rest = args.filter((a) => a !== '--verbose');
  let code = 0;
  // Nested commands (crpo dybench ...) report through process.exitCode; read it, then restore it.
  const prior = process.exitCode;
  process.exitCode = undefined;
  let y = yargs(rest)
    .scriptName('crpo')
    .strict()
    .exitProcess(false)
    .demandCommand(1, 'Name a command; `crpo ' + '--help` lists them.');
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
          checkNumbers(argv as Record<string, unknown>);
          await load(c.module).handler(argv as Record<string, unknown>);
        } catch (err) {
          code = reportError(err, verbose);
        }
      },
    );
  }
  y = y
    .fail((msg, err) => {
      if (err) throw err;
      throw new UsageError(msg + flagHint(rest, msg));
    })
    .option('verbose', { type: 'boolean', describe: 'Print the stack of any error' })
    .help()
    .wrap(Math.min(110, process.stdout.columns || 100));
  try {
    await y.parseAsync();
  } catch (err) {
    code = reportError(err, verbose);
  }
  if (code === 0 && typeof process.exitCode === 'number') code = process.exitCode;
  process.exitCode = prior;
  return code;
}

export async function main(args: string[]): Promise<void> {
  const code = await run(args);
  if (code !== 0) process.exitCode = code;
}
