/**
 * Named registries for algorithms, rewards, transforms and router backends (style rule 8): an
 * unknown name throws one message that lists the known ones.
 */
import { CrpoError } from './errors';

export class Registry<T> {
  private readonly entries = new Map<string, T>();

  constructor(readonly kind: string) {}

  register(name: string, value: T): this {
    if (this.entries.has(name))
      throw new CrpoError('ERR_CRPO_DUPLICATE', `${this.kind} '${name}' is already registered`);
    this.entries.set(name, value);
    return this;
  }

  get(name: string): T {
    const v = this.entries.get(name);
    if (v === undefined) {
      throw new CrpoError('ERR_CRPO_UNKNOWN_NAME', `Unknown ${this.kind} '${name}'; known: ${this.names().join(', ')}`);
    }
    return v;
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  names(): string[] {
    return [...this.entries.keys()].sort();
  }
}
