import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { DEFAULT_RESTART_POLICY, Supervisor, restartDelay, type SupervisorEvent } from '../src/supervisor.js';

describe('restart policy', () => {
  const p = DEFAULT_RESTART_POLICY;
  test('doubles the delay for each crash within the window, up to the cap; more than the limit is a crash loop', () => {
    const at = (n: number): number[] => Array.from({ length: n }, (_, i) => 1_000 * i);
    expect([1, 2, 3, 4, 5].map((n) => restartDelay(at(n), 10_000, p))).toEqual([500, 1_000, 2_000, 4_000, 8_000]);
    expect(restartDelay(at(6), 10_000, p)).toBeNull();
    expect(restartDelay([0, 1, 2, 3, 4, 5], 1_000_000, p)).toBe(500); // old crashes fall out of the window
    expect(restartDelay([0, 1, 2, 3, 4], 4, { ...p, maxMs: 3_000 })).toBe(3_000);
  });
});

describe('Supervisor (real child processes)', () => {
  const node = process.execPath;
  const fast = { baseMs: 50, maxMs: 200, limit: 2, windowMs: 60_000 };

  test('a child killed with SIGKILL is restarted: its log keeps both lives, warnings arrive live, the crash names its last lines', async () => {
    const log = path.join(mkdtempSync(path.join(tmpdir(), 'ferry-sup-')), 'logs', 'child.log');
    const sup = new Supervisor(fast);
    const events: SupervisorEvent[] = [];
    sup.on((e) => events.push(e));
    const script =
      "console.log('ready at 127.0.0.1:1'); console.error('warning: something odd'); setInterval(() => {}, 1000);";
    const child = await sup.add({
      name: 'toy',
      kind: 'worker',
      command: node,
      args: () => ['-e', script],
      log,
      readyLine: /^ready at (\S+)$/,
    });
    expect(child.address).toBe('127.0.0.1:1');
    const firstPid = child.pid!;
    await waitUntil(() => events.some((e) => e.type === 'warning'));
    process.kill(firstPid, 'SIGKILL');
    await waitUntil(() => events.some((e) => e.type === 'restarted'));
    expect(child.pid).not.toBe(firstPid);
    const crashed = events.find((e) => e.type === 'crashed')!;
    expect(crashed).toMatchObject({ exit: 'signal SIGKILL', restarts: 1, restartInMs: 50 });
    expect(crashed.type === 'crashed' && crashed.tail).toEqual(['ready at 127.0.0.1:1', 'warning: something odd']);
    await waitUntil(() => events.filter((e) => e.type === 'warning').length === 2);
    await sup.stopAll(['worker']);
    expect(child.alive).toBe(false);
    // Stopping is not a crash.
    expect(events.filter((e) => e.type === 'crashed')).toHaveLength(1);
    expect(readFileSync(log, 'utf8').match(/ready at/g)).toHaveLength(2);
  });

  test('a child that keeps exiting is given up on after the limit', async () => {
    const log = path.join(mkdtempSync(path.join(tmpdir(), 'ferry-sup-')), 'child.log');
    const sup = new Supervisor(fast);
    const events: SupervisorEvent[] = [];
    sup.on((e) => events.push(e));
    const child = await sup.add({
      name: 'flaky',
      kind: 'worker',
      command: node,
      args: () => ['-e', "console.error('FERRY_ERR_DEVICE: lost'); setTimeout(() => process.exit(3), 50)"],
      log,
    });
    await waitUntil(() => child.gaveUp);
    expect(events.filter((e) => e.type === 'crashed').map((e) => e.type === 'crashed' && e.exit)).toEqual([
      'exit code 3',
      'exit code 3',
    ]);
    expect(events.at(-1)).toMatchObject({
      type: 'gave-up',
      crashes: 3,
      exit: 'exit code 3',
      tail: ['FERRY_ERR_DEVICE: lost'],
    });
    expect(child.lastExit).toBe('exit code 3');
    await sup.stopAll(['worker']);
  });
});

async function waitUntil(ok: () => boolean, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
