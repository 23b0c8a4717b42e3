import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { FerryError } from '@ferry/common';
import { SlurmFleet, describeJob, tasksToSubmit } from '../src/slurm/fleet.js';
import { shellQuote, workerBatchScript } from '../src/slurm/script.js';
import { Slurm, parseSqueue, type Exec } from '../src/slurm/slurm.js';
import { slurmPlan, type SlurmRunFlags } from '../src/actions/run-slurm.js';
import { readTokenFile } from '../src/token-file.js';

/** A Slurm whose commands answer from a script: each call is recorded; squeue answers `queue`. */
function fakeSlurm(o: { queue: () => string; sbatch?: (args: readonly string[]) => string }) {
  const calls: string[][] = [];
  let next = 100;
  const exec: Exec = async (command, args) => {
    calls.push([command, ...args]);
    if (command === 'sbatch') {
      const out = o.sbatch ? o.sbatch(args) : `${next++}\n`;
      return { stdout: out, stderr: '' };
    }
    if (command === 'squeue') return { stdout: o.queue(), stderr: '' };
    return { stdout: '', stderr: '' };
  };
  return { slurm: new Slurm({}, exec), calls };
}

const FLAGS: SlurmRunFlags = { cpusPerJob: 2, sbatch: [], signalSeconds: 120, insecure: false };

describe('the Slurm adapter', () => {
  test("squeue's lines: array tasks, a state's + suffix, lines of another shape skipped", () => {
    expect(
      parseSqueue('12|11_0|RUNNING|None|node1\n13|11_1|PENDING|Resources|\nwarning: x\n14|14|CANCELLED+|None|n2\n'),
    ).toEqual([
      { jobId: '12', label: '11_0', state: 'RUNNING', reason: 'None', node: 'node1' },
      { jobId: '13', label: '11_1', state: 'PENDING', reason: 'Resources', node: '' },
      { jobId: '14', label: '14', state: 'CANCELLED', reason: 'None', node: 'n2' },
    ]);
  });

  test("sbatch's refusal is FERRY_ERR_SLURM quoting Slurm; a missing command says where Slurm's commands are", async () => {
    const refused: Exec = async () => {
      throw Object.assign(new Error('Command failed'), {
        stderr:
          'sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n',
      });
    };
    const e = await new Slurm({}, refused).submit('/x.sbatch', []).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(FerryError);
    expect((e as FerryError).code).toBe('FERRY_ERR_SLURM');
    expect((e as FerryError).message).toMatch(/Slurm refused the worker jobs: .*Invalid account/);
    const missing: Exec = async () => {
      throw Object.assign(new Error('spawn sbatch ENOENT'), { code: 'ENOENT' });
    };
    await expect(new Slurm({}, missing).submit('/x', [])).rejects.toThrow(/sbatch is not on PATH/);
  });

  test('sbatch --parsable with a cluster name; sinfo finds GPUs in a gres list', async () => {
    const { slurm } = fakeSlurm({ queue: () => '', sbatch: () => '4242;cluster-a\n' });
    expect(await slurm.submit('/s', ['--array=0-1'])).toBe('4242');
    const gres =
      (out: string): Exec =>
      async () => ({ stdout: out, stderr: '' });
    expect(await new Slurm({}, gres('(null)\ngpu:a100:4(S:0-1)\n')).hasGpus('gpu')).toBe(true);
    expect(await new Slurm({}, gres('(null)\n')).hasGpus(undefined)).toBe(false);
  });
});

describe('the fleet of worker jobs', () => {
  test('tasks to submit: back to the count while work is left, within the limit', () => {
    const base = { requested: 3, active: 1, submitted: 4, maxSubmissions: 9, workLeft: true };
    expect(tasksToSubmit(base)).toBe(2);
    expect(tasksToSubmit({ ...base, submitted: 8 })).toBe(1);
    expect(tasksToSubmit({ ...base, submitted: 9 })).toBe(0);
    expect(tasksToSubmit({ ...base, workLeft: false })).toBe(0);
    expect(tasksToSubmit({ ...base, active: 4 })).toBe(0);
  });

  test('an ended task is said and replaced; a spent limit with the sweep unfinished is FERRY_ERR_SLURM; stop cancels every array', async () => {
    let queue = '101|100_0|RUNNING|None|n1\n102|100_1|RUNNING|None|n2\n';
    const { slurm, calls } = fakeSlurm({ queue: () => queue });
    const said: string[] = [];
    const fleet = new SlurmFleet(slurm, {
      jobs: 2,
      maxSubmissions: 3,
      script: '/out/slurm/worker.sbatch',
      sbatchArgs: ['--constraint=a100'],
      say: (l) => said.push(l),
      graceMs: 0,
    });
    await fleet.start();
    expect(calls[0]).toEqual(['sbatch', '--parsable', '--array=0-1', '--constraint=a100', '/out/slurm/worker.sbatch']);
    await fleet.poll(true);
    expect(said).toContain('slurm: job 100_0 RUNNING on n1');
    queue = '101|100_0|TIMEOUT|TimeLimit|n1\n102|100_1|RUNNING|None|n2\n';
    await fleet.poll(true);
    expect(said).toContain('slurm: job 100_0 TIMEOUT (TimeLimit)');
    expect(said.at(-1)).toBe('slurm: submitted job 101 (1 worker task, replacing 100_0; 3 of at most 3 submitted)');
    expect(calls.filter((c) => c[0] === 'sbatch')).toHaveLength(2);
    // Both end; the limit is spent: the sweep cannot get a worker any more.
    queue = '101|100_0|TIMEOUT|TimeLimit|n1\n102|100_1|FAILED|NonZeroExitCode|n2\n103|101_0|NODE_FAIL|None|n3\n';
    const e = await fleet.poll(true).catch((x: unknown) => x);
    expect((e as FerryError).code).toBe('FERRY_ERR_SLURM');
    expect((e as FerryError).message).toMatch(
      /3 submissions --max-submissions allows are spent.*100_1 FAILED \(NonZeroExitCode\)/,
    );
    // No work left: nothing more is submitted, and no error.
    await fleet.poll(false);
    await fleet.stop();
    expect(calls.at(-1)).toEqual(['scancel', '100', '101']);
  });

  test('a task pending for a reason that never clears is FERRY_ERR_SLURM naming it; a wait for resources is not', async () => {
    let queue = '7|7_0|PENDING|Resources|\n';
    const { slurm } = fakeSlurm({ queue: () => queue });
    const fleet = new SlurmFleet(slurm, { jobs: 1, maxSubmissions: 3, script: '/s', sbatchArgs: [], say: () => {} });
    await fleet.start();
    await fleet.poll(true);
    queue = '7|7_0|PENDING|InvalidAccount|\n';
    await expect(fleet.poll(true)).rejects.toThrow(/Slurm will not start job 7_0: InvalidAccount/);
  });

  test('a task just submitted counts as coming until squeue lists it (no double submission)', async () => {
    const { slurm, calls } = fakeSlurm({ queue: () => '' });
    const fleet = new SlurmFleet(slurm, { jobs: 2, maxSubmissions: 6, script: '/s', sbatchArgs: [], say: () => {} });
    await fleet.start();
    await fleet.poll(true);
    expect(calls.filter((c) => c[0] === 'sbatch')).toHaveLength(1);
  });

  test('a Slurm that fails for a moment is said and tried again; one that keeps failing past the outage limit ends the run', async () => {
    let down = false;
    const exec: Exec = async (command) => {
      if (command === 'sbatch') return { stdout: '9\n', stderr: '' };
      if (down) throw Object.assign(new Error('failed'), { stderr: 'squeue: error: Socket timed out on send/recv' });
      return { stdout: '10|9_0|RUNNING|None|n1\n', stderr: '' };
    };
    const said: string[] = [];
    const fleet = new SlurmFleet(new Slurm({}, exec), {
      jobs: 1,
      maxSubmissions: 3,
      script: '/s',
      sbatchArgs: [],
      say: (l) => said.push(l),
      outageMs: 200,
    });
    await fleet.start();
    down = true;
    await fleet.poll(true);
    await fleet.poll(true);
    expect(said.filter((l) => l.includes('Socket timed out'))).toHaveLength(1);
    down = false;
    await fleet.poll(true);
    expect(said.at(-2)).toBe('slurm: answering again');
    down = true;
    await fleet.poll(true);
    await new Promise((r) => setTimeout(r, 250));
    await expect(fleet.poll(true)).rejects.toThrow(/squeue failed: squeue: error: Socket timed out/);
  });

  test("a job's state as the user reads it", () => {
    expect(describeJob({ state: 'RUNNING', reason: 'None', node: 'gpu7' })).toBe('RUNNING on gpu7');
    expect(describeJob({ state: 'PENDING', reason: 'Priority', node: '' })).toBe('PENDING (Priority)');
    expect(describeJob({ state: 'COMPLETED', reason: 'None', node: 'gpu7' })).toBe('COMPLETED');
  });
});

describe('the batch script', () => {
  const plan = {
    sweep: 'my study',
    node: '/usr/bin/node',
    bin: "/home/o'neil/ferry/bin/ferry.js",
    coordinator: 'login1:7070',
    tokenFile: '/home/u/runs/s/slurm/token',
    tlsCa: '/home/u/ca.pem',
    dataRoot: '/data',
    workRoot: '/home/u/runs/s/workers',
    logDir: '/home/u/runs/s/logs',
    backend: 'auto',
    gres: 'gpu:1',
    cpusPerTask: 4,
    partition: 'gpu',
    time: '4:00:00',
    signalSeconds: 120,
    giveUpAfterMs: 600_000,
  };

  test("one worker per task with the task's cores; the directives; the token by file only; quoting", () => {
    const s = workerBatchScript(plan);
    expect(s.startsWith('#!/bin/bash\n')).toBe(true);
    for (const d of [
      '--job-name=ferry-my-study',
      '--output=/home/u/runs/s/logs/slurm-%A_%a.log',
      '--signal=B:TERM@120',
      '--cpus-per-task=4',
      '--gres=gpu:1',
      '--partition=gpu',
      '--time=4:00:00',
    ])
      expect(s).toContain(`#SBATCH ${d}\n`);
    expect(s).not.toContain('--account');
    expect(s).toContain(
      "exec /usr/bin/node '/home/o'\\''neil/ferry/bin/ferry.js' worker --coordinator login1:7070 --token-file /home/u/runs/s/slurm/token --tls-ca /home/u/ca.pem",
    );
    expect(s).toContain('--work-dir /home/u/runs/s/workers/"slurm-$task" --name "slurm-$task" --threads "$threads"');
    expect(s).toContain('--poll-ms 1000 --give-up-after-ms 600000');
    expect(s).toContain('export FERRY_TORCH_THREADS="$threads" FERRY_WASM_THREADS="$threads"');
    expect(shellQuote('a b')).toBe("'a b'");
    expect(shellQuote('plain/path-1.2')).toBe('plain/path-1.2');
  });
});

describe('ferry run --slurm flags', () => {
  test('Slurm flags need --slurm; --slurm and --workers exclude each other; limits and time checked', () => {
    expect(slurmPlan(FLAGS, false)).toBeUndefined();
    expect(() => slurmPlan({ ...FLAGS, partition: 'gpu' }, false)).toThrow(/--partition is a flag of --slurm/);
    expect(() => slurmPlan({ ...FLAGS, sbatch: ['--x'] }, false)).toThrow(/--sbatch is a flag of --slurm/);
    expect(() => slurmPlan({ ...FLAGS, slurm: 2 }, true)).toThrow(/--slurm <jobs> and --workers/);
    expect(() => slurmPlan({ ...FLAGS, slurm: 4, maxSubmissions: 3 }, false)).toThrow(/fewer than the 4 jobs/);
    expect(() => slurmPlan({ ...FLAGS, slurm: 1, time: 'forever' }, false)).toThrow(/--time forever/);
    expect(slurmPlan({ ...FLAGS, slurm: 4, time: '1-12:00' }, false)).toEqual({
      jobs: 4,
      maxSubmissions: 12,
      flags: { ...FLAGS, slurm: 4, time: '1-12:00' },
    });
  });

  test('a token file others can read is refused with the fix; an empty one too; whitespace trimmed', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-token-'));
    const f = path.join(dir, 'token');
    writeFileSync(f, 'secret\n', { mode: 0o644 });
    chmodSync(f, 0o644);
    expect(() => readTokenFile(f)).toThrow(/can be read by other users \(mode 644\): chmod 600/);
    chmodSync(f, 0o600);
    expect(readTokenFile(f)).toBe('secret');
    writeFileSync(f, '\n');
    expect(() => readTokenFile(f)).toThrow(/is empty/);
    expect(() => readTokenFile(path.join(dir, 'none'))).toThrow(/--token-file .*ENOENT/);
  });
});
