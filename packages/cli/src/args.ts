import { parseArgs } from 'node:util';
import { InvalidArgumentError } from '@ferry/core';

export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly short?: string;
}

/** Parsed flags with typed accessors; unknown flags are usage errors naming the usage line. */
export class Args {
  private constructor(
    private readonly values: Readonly<Record<string, string | boolean | undefined>>,
    readonly positionals: readonly string[],
    private readonly usage: string,
  ) {}

  static parse(argv: readonly string[], options: Readonly<Record<string, OptionSpec>>, usage: string): Args {
    try {
      const r = parseArgs({ args: [...argv], options: { ...options }, allowPositionals: true, strict: true });
      return new Args(r.values as Record<string, string | boolean | undefined>, r.positionals, usage);
    } catch (e) {
      throw new InvalidArgumentError(`${(e as Error).message}\nusage: ${usage}`);
    }
  }

  string(name: string): string | undefined {
    const v = this.values[name];
    return typeof v === 'string' ? v : undefined;
  }

  required(name: string): string {
    const v = this.string(name);
    if (v === undefined) throw new InvalidArgumentError(`--${name} is required\nusage: ${this.usage}`);
    return v;
  }

  flag(name: string): boolean {
    return this.values[name] === true;
  }

  int(name: string, fallback: number, min = 0): number {
    return intOption(this.string(name), name, fallback, min);
  }

  number(name: string, fallback: number): number {
    const v = this.string(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new InvalidArgumentError(`--${name} must be a number (got "${v}")`);
    return n;
  }
}

export function intOption(value: string | undefined, name: string, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min)
    throw new InvalidArgumentError(`--${name} must be an integer >= ${min} (got "${value}")`);
  return n;
}
