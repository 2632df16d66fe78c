/**
 * One error type for the whole library. Every error that crosses the native boundary, and every
 * known user error, is a CrpoError with a stable `code` (ERR_CRPO_...). Errors coming out of the
 * addons are re-created here, in the caller's realm and with the caller's stack (jest runs tests
 * in a vm context where `instanceof Error` fails on main-realm errors; see native-notes.md).
 */

export type CrpoErrorKind = 'type' | 'range' | 'error';

export class CrpoError extends Error {
  readonly code: string;
  /** Native op or library function that raised it, when known. */
  readonly op?: string;
  /** True for mistakes the user can fix (bad flag, bad file); the CLI prints one line for these. */
  readonly userError: boolean;

  constructor(code: string, message: string, options: { op?: string; userError?: boolean; cause?: unknown } = {}) {
    super(message);
    this.name = 'CrpoError';
    this.code = code;
    this.op = options.op;
    this.userError = options.userError ?? true;
    if (options.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

export class CrpoTypeError extends TypeError {
  readonly code: string;
  readonly op?: string;
  readonly userError = true;
  constructor(code: string, message: string, op?: string) {
    super(message);
    this.name = 'CrpoTypeError';
    this.code = code;
    this.op = op;
  }
}

export class CrpoRangeError extends RangeError {
  readonly code: string;
  readonly op?: string;
  readonly userError = true;
  constructor(code: string, message: string, op?: string) {
    super(message);
    this.name = 'CrpoRangeError';
    this.code = code;
    this.op = op;
  }
}

/** Describes a received value the way every message in crpo does: "3 of type number". */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return `'${value.length > 60 ? value.slice(0, 57) + '...' : value}' of type string`;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `${String(value)} of type ${typeof value}`;
  }
  if (ArrayBuffer.isView(value))
    return `${value.constructor.name}(${(value as unknown as { length?: number }).length ?? value.byteLength})`;
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (typeof value === 'function') return 'a function';
  return 'an object';
}

/** TypeError with the standard message: "Expected X for name but received v of type t". */
export function invalidArg(name: string, expected: string, received: unknown, op?: string): CrpoTypeError {
  return new CrpoTypeError(
    'ERR_CRPO_INVALID_ARG',
    `Expected ${expected} for ${name} but received ${describe(received)}`,
    op,
  );
}

/** RangeError with the standard message. */
export function outOfRange(name: string, expected: string, received: unknown, op?: string): CrpoRangeError {
  return new CrpoRangeError(
    'ERR_CRPO_OUT_OF_RANGE',
    `Expected ${expected} for ${name} but received ${describe(received)}`,
    op,
  );
}

interface NativeErrorLike {
  message?: unknown;
  code?: unknown;
  op?: unknown;
  name?: unknown;
}

/**
 * Re-creates an error thrown by an addon in this realm, keeping its code and op and attaching
 * the caller's stack (`callerStack`, captured before the native call for async work).
 */
export function fromNative(err: unknown, callerStack?: string): Error {
  const e = (err ?? {}) as NativeErrorLike;
  const message = typeof e.message === 'string' ? e.message : String(err);
  const code = typeof e.code === 'string' ? e.code : 'ERR_CRPO_NATIVE';
  const op = typeof e.op === 'string' ? e.op : undefined;
  let out: Error;
  if (e.name === 'TypeError') out = new CrpoTypeError(code, message, op);
  else if (e.name === 'RangeError') out = new CrpoRangeError(code, message, op);
  else out = new CrpoError(code, message, { op, userError: false });
  if (callerStack) out.stack = `${out.name}: ${message}\n${callerStack.split('\n').slice(1).join('\n')}`;
  return out;
}

/** True for errors the CLI should print as one line (known user mistakes). */
export function isUserError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { userError?: unknown }).userError === true;
}
