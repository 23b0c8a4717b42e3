import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { connect } from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { FerryError } from '@ferry/common';

/**
 * The children of `ferry run` kept alive: each is restarted when it exits without being asked to,
 * after a backoff, until it crashes more than a limit within a window (a crash loop). Its output
 * goes to its log file as it is written, its warnings to the caller as they happen, and every
 * restart is an event the caller shows (terminal line, dashboard event).
 *
 * Hand-written rather than a process manager from npm (pm2, forever): those run as daemons of their
 * own, outlive the command, and do not tell their caller about a restart in-process, which is what
 * `ferry run` needs to print and publish it.
 */

export type ChildKind = 'coordinator' | 'worker' | 'nats-server' | 'dashboard';

export interface ChildSpec {
  /** As the user reads it: `worker local-0`, `coordinator`. */
  readonly name: string;
  readonly kind: ChildKind;
  readonly command: string;
  /** Arguments of each start (a restart may need other ones: the address the first start bound). */
  readonly args: () => readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** The child's stdout and stderr, appended as written. */
  readonly log: string;
  /** Ready when a stdout line matches; its first group is the child's address. */
  readonly readyLine?: RegExp;
  /** Ready when this TCP port on 127.0.0.1 accepts connections. */
  readonly readyPort?: number;
  readonly readyTimeoutMs?: number;
}

export interface RestartPolicy {
  /** The first restart's delay; doubled for each crash within the window. */
  readonly baseMs: number;
  readonly maxMs: number;
  /** More crashes than this within windowMs is a crash loop: no more restarts. */
  readonly limit: number;
  readonly windowMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = { baseMs: 500, maxMs: 8_000, limit: 5, windowMs: 120_000 };

/** The delay before restarting a child whose crashes (this one included) happened at `crashes`; null: a crash loop. */
export function restartDelay(crashes: readonly number[], now: number, p: RestartPolicy): number | null {
  const recent = crashes.filter((t) => now - t <= p.windowMs).length;
  if (recent > p.limit) return null;
  return Math.min(p.maxMs, p.baseMs * 2 ** Math.max(0, recent - 1));
}

/** `; last lines of LOG:` and the lines quoted, or '' when there are none. */
export function lastLinesText(log: string, lines: readonly string[]): string {
  return lines.length ? `; last lines of ${log}:\n${lines.map((l) => `  | ${l}`).join('\n')}` : '';
}

/** How a child ended: `exit code 3` or `signal SIGKILL`. */
export function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `signal ${signal}` : `exit code ${code ?? '?'}`;
}

export type SupervisorEvent =
  | {
      readonly type: 'crashed';
      readonly child: ChildSpec;
      readonly exit: string;
      readonly restartInMs: number;
      readonly restarts: number;
      readonly tail: readonly string[];
    }
  | { readonly type: 'restarted'; readonly child: ChildSpec; readonly pid: number; readonly restarts: number }
  | {
      readonly type: 'gave-up';
      readonly child: ChildSpec;
      readonly exit: string;
      readonly crashes: number;
      readonly windowMs: number;
      readonly tail: readonly string[];
    }
  | { readonly type: 'warning'; readonly child: ChildSpec; readonly line: string };

const TAIL_LINES = 8;
const WARNING = /\b(warning|error|failed|FERRY_ERR_[A-Z_]+)\b/i;

/** One supervised child: the current process, its last lines, its crash history. */
export class Supervised {
  process: ChildProcess | null = null;
  /** The address its first start reported (readyLine's group), or ''. */
  address = '';
  restarts = 0;
  gaveUp = false;
  /** How the last unexpected exit ended (`signal SIGKILL`), or ''. */
  lastExit = '';
  private crashes: number[] = [];
  private readonly tail: string[] = [];
  private readonly logFile: WriteStream;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly spec: ChildSpec,
    private readonly supervisor: Supervisor,
  ) {
    mkdirSync(path.dirname(spec.log), { recursive: true });
    this.logFile = createWriteStream(spec.log, { flags: 'a' });
  }

  get alive(): boolean {
    return this.process !== null && this.process.exitCode === null && this.process.signalCode === null;
  }

  get pid(): number | undefined {
    return this.process?.pid;
  }

  lastLines(): string[] {
    return [...this.tail];
  }

  /** Starts the process; resolves when it is ready (with its address), rejects if it exits first. */
  start(): Promise<string> {
    const s = this.spec;
    const child = spawn(s.command, [...s.args()], { stdio: ['ignore', 'pipe', 'pipe'], env: s.env ?? process.env });
    this.process = child;
    this.tail.length = 0; // the last lines of this life
    let onReadyLine: ((address: string) => void) | undefined;
    const watch = (stream: NodeJS.ReadableStream, isStdout: boolean): void => {
      stream.pipe(this.logFile, { end: false });
      createInterface({ input: stream }).on('line', (line) => {
        this.tail.push(line);
        if (this.tail.length > TAIL_LINES) this.tail.shift();
        if (isStdout && s.readyLine) {
          const m = s.readyLine.exec(line);
          if (m) onReadyLine?.(m[1] ?? '');
        }
        if (WARNING.test(line)) this.supervisor.emit({ type: 'warning', child: s, line });
      });
    };
    watch(child.stdout!, true);
    watch(child.stderr!, false);
    const ready = new Promise<string>((resolve, reject) => {
      const timeoutMs = s.readyTimeoutMs ?? 60_000;
      const timer = setTimeout(() => {
        reject(
          new FerryError('FERRY_ERR_CRASH_LOOP', `${s.name} was not ready within ${timeoutMs} ms; its log: ${s.log}`),
        );
        child.kill('SIGKILL'); // a hung start is one more crash
      }, timeoutMs);
      const settle = (address: string): void => {
        clearTimeout(timer);
        resolve(address);
      };
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(
          new FerryError(
            'FERRY_ERR_CRASH_LOOP',
            `${s.name} exited (${describeExit(code, signal)}) before it was ready${this.tailText()}`,
          ),
        );
      });
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(new FerryError('FERRY_ERR_CRASH_LOOP', `${s.name} could not start: ${e.message}`));
      });
      if (s.readyLine) onReadyLine = settle;
      else if (s.readyPort !== undefined)
        void waitForPort(s.readyPort, timeoutMs).then(
          () => settle(`127.0.0.1:${s.readyPort}`),
          () => undefined,
        );
      else settle('');
    });
    // 'close' (not 'exit'): its output has been read to the end, so the tail holds its last lines.
    child.once('close', (code, signal) => this.exited(child, code, signal));
    return ready.then((address) => {
      if (!this.address) this.address = address;
      return address;
    });
  }

  tailText(): string {
    return lastLinesText(this.spec.log, this.tail) || `; its log: ${this.spec.log}`;
  }

  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.process || this.supervisor.stopping || this.stopped) return;
    const now = Date.now();
    this.crashes.push(now);
    const exit = describeExit(code, signal);
    this.lastExit = exit;
    const delay = restartDelay(this.crashes, now, this.supervisor.policy);
    const tail = this.lastLines();
    if (delay === null) {
      this.gaveUp = true;
      const windowMs = this.supervisor.policy.windowMs;
      this.supervisor.emit({
        type: 'gave-up',
        child: this.spec,
        exit,
        crashes: this.crashes.filter((t) => now - t <= windowMs).length,
        windowMs,
        tail,
      });
      return;
    }
    this.restarts++;
    this.supervisor.emit({
      type: 'crashed',
      child: this.spec,
      exit,
      restartInMs: delay,
      restarts: this.restarts,
      tail,
    });
    this.timer = setTimeout(() => {
      if (this.supervisor.stopping) return;
      // A restart that fails before it is ready is one more crash (handled by exited()).
      this.start().then(
        () =>
          this.supervisor.emit({
            type: 'restarted',
            child: this.spec,
            pid: this.process?.pid ?? 0,
            restarts: this.restarts,
          }),
        () => undefined,
      );
    }, delay);
  }

  private stopped = false;

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  async stop(graceMs: number): Promise<void> {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.stopped = true;
    const child = this.process;
    if (child && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await gone;
      clearTimeout(kill);
    }
    await new Promise((r) => this.logFile.end(r));
  }
}

export class Supervisor {
  stopping = false;
  private readonly children: Supervised[] = [];
  private readonly listeners: ((e: SupervisorEvent) => void)[] = [];

  constructor(readonly policy: RestartPolicy = DEFAULT_RESTART_POLICY) {}

  on(listener: (e: SupervisorEvent) => void): void {
    this.listeners.push(listener);
  }

  emit(e: SupervisorEvent): void {
    for (const l of this.listeners) l(e);
  }

  /** Adds and starts a child; resolves with its address once ready (a failed first start rejects: nothing to restart yet). */
  async add(spec: ChildSpec): Promise<Supervised> {
    const s = new Supervised(spec, this);
    this.children.push(s);
    await s.start();
    return s;
  }

  list(kind?: ChildKind): Supervised[] {
    return this.children.filter((c) => kind === undefined || c.spec.kind === kind);
  }

  /** Stops every child, kinds in the order given (workers first: they release their leases). */
  async stopAll(order: readonly ChildKind[], graceMs = 30_000): Promise<void> {
    this.stopping = true;
    for (const kind of order) await Promise.all(this.list(kind).map((c) => c.stop(graceMs)));
    await Promise.all(this.children.map((c) => c.stop(graceMs)));
  }
}

/** Resolves when 127.0.0.1:port accepts a connection; rejects after timeoutMs. */
export async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect(port, '127.0.0.1', () => {
        sock.end();
        resolve(true);
      });
      sock.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until)
      throw new FerryError('FERRY_ERR_CRASH_LOOP', `nothing listens on port ${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
