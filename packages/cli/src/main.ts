import { ERRORS, LIMITS, exitCodeOf, extractLimitFlags, isFerryError, limits, type FerryError } from '@ferry/common';
import { err, type CliIo } from './io.js';
import type { CommandContext } from './kit.js';
import { buildProgram, commandOf, commandPath, normalise, runProgram } from './program.js';

/** The `ferry` entry point; returns the process exit code (2 for a usage or input error). */
export async function main(argv: readonly string[], io: CliIo): Promise<number> {
  let given: ReturnType<typeof extractLimitFlags>;
  let limitEnv: Record<string, string>;
  try {
    given = extractLimitFlags(argv);
    // The limits in force: FERRY_MAX_* of the caller's environment, then the flags.
    limitEnv = { ...limitVariables(io.env), ...given.env };
    limits(limitEnv); // a malformed FERRY_MAX_* is said now, not at the first image
  } catch (e) {
    if (!isFerryError(e)) throw e;
    report(io, 'ferry', e);
    return exitCodeOf(e.code);
  }
  // For the command's duration they are this process's variables too: its worker threads (the
  // decode pool) and child processes (ferry run's coordinator and workers) apply the same values.
  const saved = limitVariables(process.env);
  for (const k of Object.keys(saved)) delete process.env[k];
  Object.assign(process.env, limitEnv);
  try {
    return await dispatch(given.argv, io);
  } finally {
    for (const k of Object.keys(limitVariables(process.env))) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

function limitVariables(env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of Object.values(LIMITS)) {
    const v = env[l.env];
    if (v !== undefined) out[l.env] = v;
  }
  return out;
}

/** `ferry <command>: <message> [<CODE>]`, then the registry's fix for the code. */
function report(io: CliIo, who: string, e: FerryError): void {
  err(io, `${who}: ${e.message} [${e.code}]`);
  if (e.code !== 'FERRY_ERR_INTERNAL') err(io, `  what to do: ${ERRORS[e.code].fix.replace(/`/g, '')}`);
}

async function dispatch(given: readonly string[], io: CliIo): Promise<number> {
  const argv = normalise(given);
  const ctx: CommandContext = { io, argv, code: 0 };
  const program = buildProgram(ctx);
  try {
    return await runProgram(argv, ctx, program);
  } catch (e) {
    const who = commandPath(commandOf(program, argv));
    if (isFerryError(e)) {
      report(io, who, e);
      return exitCodeOf(e.code);
    }
    err(io, `${who}: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return 1;
  }
}
