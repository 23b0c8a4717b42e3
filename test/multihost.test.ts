import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { readCheckpoint, writeDemoDataset } from '@ferry/core';
import type { ConnectionOptions } from '@ferry/client';
import type { SweepStatus } from '@ferry/protocol';
import {
  attemptsOf,
  EXPIRY_SLACK_MS,
  epochIndices,
  freePort,
  getSweep,
  kill,
  outcome,
  startCoordinator,
  startWorker,
  submit,
  waitFor,
  type Proc,
} from './helpers/cluster.js';
import { REPO_ROOT } from './helpers/torch-ref.js';
import { selfSignedCert } from './helpers/tls.js';

/**
 * Several "hosts" on one machine: the coordinator in the root network namespace on a bridge, two
 * workers in their own namespaces (ip netns + veth, iproute2), talking over real addresses with TLS
 * and a token; the workers' ring links (data-parallel rings) use TLS too, over the bridge. One
 * worker's link is cut for longer than a lease and then healed; a `workers: 2` cell runs its ring
 * across the two namespaces. Each is compared with an undisturbed run of the same sweep.
 */
const id = String(process.pid % 10000);
const BR = `fbr${id}`;
const NS = [`fw1-${id}`, `fw2-${id}`];
const VETH = [`fv1-${id}`, `fv2-${id}`];
const HOST = '10.231.0.1';
const WORKER_IP = ['10.231.0.11', '10.231.0.12'];
const NAMES = ['host1', 'host2'];
const TOKEN = 'multi-host-token';
const sh = (cmd: string): string => execFileSync('sh', ['-c', cmd], { encoding: 'utf8' });
const tmp = (): string => mkdtempSync(path.join(tmpdir(), 'ferry-mh-'));
const BIN = path.join(REPO_ROOT, 'packages/cli/bin/ferry.js');
const procs: Proc[] = [];
let dataRoot = '';
/** One self-signed certificate for the three hosts (a SAN for each address): the coordinator's and each worker's ring link. */
let cert = '';
let key = '';

/** How long a worker's log line may trail the coordinator's state it reports. */
const LOG_MS = 5_000;
const LEASE_MS = 3_000;
const HEARTBEAT_MS = 300;
const FAST = ['--lease-ms', String(LEASE_MS), '--heartbeat-ms', String(HEARTBEAT_MS)];
/** The partition's sweep: epochs per cell. */
const EPOCHS = 6;
/**
 * The link is cut once the cut worker has checkpointed this many epochs: 4 are left to train, so
 * that a poll answered late on a loaded machine still cuts a cell that is training, not finishing.
 */
const CUT_AT = 2;
/** The data-parallel cell's epochs. */
const DP_EPOCHS = 4;
/** Bounds on the waits the timeouts are summed from (2 cores, shared). */
const START_MS = 30_000; // processes started, the sweep submitted, a first epoch under way
const EPOCH_MS = 10_000; // one epoch of one cell
const SWEEP_MS = 120_000; // a whole sweep, from wherever it is
/**
 * From the heal to the stale completion's refusal: the cut worker's TCP connection to the
 * coordinator retransmits with a backoff that doubled through the cut (so up to about the cut's
 * length, ~4 s here; the refusal came 0.2-1 s after the heal), then its checkpoint uploads and
 * completion are answered.
 */
const STALE_MS = 30_000;

const sweepYaml = (name: string, epochs: number, extraHyper = ''): string => `name: ${name}
datasets: [{ name: demo, path: demo }]
colors: ${extraHyper ? '[rgb]' : '[rgb, gray]'}
strategies: [finetune]
models: [resnet_tiny]
hyper: { weights: none, epochs: ${epochs}, batchSize: 16, lr: 0.02, imageSize: 32${extraHyper} }
`;

beforeAll(async () => {
  sh(`ip link add ${BR} type bridge && ip addr add ${HOST}/24 dev ${BR} && ip link set ${BR} up`);
  NS.forEach((ns, i) => {
    sh(`ip netns add ${ns}`);
    sh(`ip link add ${VETH[i]} type veth peer name ${VETH[i]}p`);
    sh(`ip link set ${VETH[i]}p netns ${ns} && ip link set ${VETH[i]} master ${BR} && ip link set ${VETH[i]} up`);
    sh(
      `ip netns exec ${ns} ip addr add ${WORKER_IP[i]}/24 dev ${VETH[i]}p && ip netns exec ${ns} ip link set ${VETH[i]}p up && ip netns exec ${ns} ip link set lo up`,
    );
  });
  const dir = tmp();
  ({ key, cert } = selfSignedCert(
    dir,
    'ferry-multihost',
    [HOST, ...WORKER_IP].map((ip) => `IP:${ip}`),
  ));
  dataRoot = tmp();
  await writeDemoDataset(path.join(dataRoot, 'demo'), { trainPerClass: 24, valPerClass: 8, size: 32, seed: 9 });
});

afterEach(async () => {
  for (const p of procs.splice(0)) await kill(p);
  // A test that failed with a link cut must not leave it cut for the next.
  for (const v of VETH) sh(`ip link set ${v} up`);
});

afterAll(async () => {
  for (const p of procs.splice(0)) await kill(p);
  for (const ns of NS) sh(`ip netns del ${ns} 2>/dev/null || true`);
  sh(`ip link del ${BR} 2>/dev/null || true`);
});

interface Cluster {
  readonly conn: ConnectionOptions;
  readonly workers: Proc[];
  /** Each worker's work directory (its local checkpoints). */
  readonly workDirs: string[];
}

/**
 * A fresh coordinator on the bridge (TLS, token) and a worker in each namespace. The workers
 * present the shared certificate (the ring link's) and serve peers on their own address over
 * TLS: no --insecure-peer, so a ring link without TLS could not start off loopback.
 */
async function cluster(): Promise<Cluster> {
  const port = await freePort();
  const coord = await startCoordinator([
    '--listen',
    `${HOST}:${port}`,
    '--state',
    tmp(),
    '--tls-cert',
    cert,
    '--tls-key',
    key,
    '--token',
    TOKEN,
    ...FAST,
  ]);
  procs.push(coord);
  const workDirs = NS.map(() => tmp());
  const workers = NS.map((ns, i) => {
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        BIN,
        'worker',
        '--coordinator',
        `${HOST}:${port}`,
        '--tls-ca',
        cert,
        '--tls-cert',
        cert,
        '--tls-key',
        key,
        '--token',
        TOKEN,
        '--name',
        NAMES[i]!,
        '--data-root',
        dataRoot,
        '--work-dir',
        workDirs[i]!,
        '--backend',
        'wasm',
        '--threads',
        '1',
        '--poll-ms',
        '300',
        '--peer-host',
        WORKER_IP[i]!,
      ],
      { env: { ...process.env, FERRY_WASM_THREADS: '1', FERRY_CACHE: tmp() }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let log = '';
    child.stdout.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const p: Proc = { child, log: () => log, exited: new Promise((r) => child.on('exit', r)) };
    procs.push(p);
    return p;
  });
  return { conn: { address: `${HOST}:${port}`, token: TOKEN, tls: { ca: cert } }, workers, workDirs };
}

/** Polls until every cell of the sweep has ended. */
function finished(conn: ConnectionOptions, sweepId: string, what: string, timeoutMs: number): Promise<SweepStatus> {
  return waitFor(
    what,
    timeoutMs,
    async () => {
      const s = await getSweep(conn, sweepId);
      return s.done + s.failed === s.totalCells ? s : undefined;
    },
    250,
  );
}

/** How many times a worker's log says it started an attempt of `cellId`. */
const started = (log: string, cellId: string): number => log.split(`cell ${cellId} (`).length - 1;

describe('a partition longer than the lease, then healed', () => {
  /**
   * The undisturbed run the partition is compared with: the same 2-cell sweep on the same two
   * namespaced workers (fresh processes, fresh coordinator), once.
   */
  let baseline: SweepStatus;
  beforeAll(async () => {
    const { conn, workers } = await cluster();
    // Without the token, over TLS, the coordinator refuses.
    await expect(getSweep({ address: conn.address, tls: { ca: cert } }, 'x')).rejects.toMatchObject({ code: 16 });
    const sweepId = await submit(conn, sweepYaml('mh', EPOCHS));
    baseline = await finished(conn, sweepId, 'the undisturbed sweep', START_MS + SWEEP_MS);
    expect(baseline.cells.map((c) => [c.state, c.attempts, c.result!.resumedFromEpoch])).toEqual([
      ['done', 1, 0],
      ['done', 1, 0],
    ]);
    // One cell each: both namespaces reached the coordinator.
    for (const w of workers) expect(baseline.cells.filter((c) => started(w.log(), c.cellId) === 1)).toHaveLength(1);
    for (const p of procs.splice(0)) await kill(p);
  }, START_MS + SWEEP_MS);

  // Waits: a checkpoint of CUT_AT epochs on host1 (START_MS + that many epochs), the lease's
  // expiry (bounded below; asked for 10 s longer so that a late expiry fails on its time, not the
  // wait), the cut worker's last 2 epochs (ending within the expiry's wait but bounded on their
  // own), the outage padded to a lease (within the expiry's wait), the stale completion's refusal
  // (STALE_MS), the sweep (SWEEP_MS); the timeout is their sum.
  test(
    "a worker's link cut for longer than the lease: its cell is lost when the lease runs out and resumes elsewhere; healed, the worker's stale completion is refused; the results, epochs and attempts of an undisturbed run",
    async () => {
      const { conn, workers, workDirs } = await cluster();
      const sweepId = await submit(conn, sweepYaml('mh', EPOCHS));
      const victim = await waitFor(
        `a cell on host1 with a checkpoint of ${CUT_AT} epochs`,
        START_MS + CUT_AT * EPOCH_MS,
        async () =>
          (await getSweep(conn, sweepId)).cells.find(
            (c) => c.state === 'running' && c.worker === 'host1' && c.checkpointEpochs >= CUT_AT,
          ),
      );
      const cut = Date.now();
      sh(`ip link set ${VETH[0]} down`);
      // The lease was last renewed (heartbeat, epoch report or checkpoint) at most a heartbeat
      // before the cut; the coordinator checks leases every TICK_MS. So the attempt ends between
      // the lease (less a few late heartbeats) and the lease plus a tick (plus the status call).
      const { lost, after } = await waitFor(
        'the lease to expire',
        LEASE_MS + EXPIRY_SLACK_MS + 10_000,
        async () => {
          const c = (await getSweep(conn, sweepId)).cells.find((x) => x.cellId === victim.cellId)!;
          return c.state !== 'running' || c.worker !== 'host1' || c.attempts > 1
            ? { lost: Date.now() - cut, after: c }
            : undefined;
        },
        50,
      );
      // Lost, not finished: the cell went back to pending (or on to the other worker).
      expect(after.state, `the cut cell ended ${lost} ms after the cut`).not.toBe('done');
      expect(lost).toBeGreaterThanOrEqual(LEASE_MS - 5 * HEARTBEAT_MS);
      expect(lost).toBeLessThanOrEqual(LEASE_MS + EXPIRY_SLACK_MS);
      // Cut off, host1 trains on: it still believes it holds the attempt. Heal the link once it has
      // trained the cell to the end (its own last checkpoint), so that what it sends next is the
      // completion of an attempt the coordinator no longer leases.
      const local = path.join(workDirs[0]!, 'cells', victim.cellId, 'last.safetensors');
      await waitFor(
        "host1 to finish the cell's epochs while cut off",
        (EPOCHS - CUT_AT) * EPOCH_MS,
        async () => (existsSync(local) && (await readCheckpoint(local)).meta.epochsDone === EPOCHS ? true : undefined),
        100,
      );
      expect(workers[0]!.log()).not.toContain(`cell ${victim.cellId}: best val`);
      // An outage longer than the lease (which may have run out a heartbeat before cut + LEASE_MS).
      await new Promise((r) => setTimeout(r, Math.max(0, cut + LEASE_MS + HEARTBEAT_MS - Date.now())));
      const healed = Date.now();
      sh(`ip link set ${VETH[0]} up`);
      const refused = await waitFor(
        'the stale completion to be refused',
        STALE_MS,
        async () =>
          new RegExp(
            `cell ${victim.cellId}: best val [\\d.]+% \\(not recorded: attempt is not leased; result not recorded\\)`,
          ).test(workers[0]!.log())
            ? Date.now() - healed
            : undefined,
        100,
      );
      expect(refused).toBeLessThanOrEqual(STALE_MS);
      // Its checkpoint uploads of the epochs trained while cut off were refused the same way (their
      // answers race the completion's on the healed connection: wait for them too).
      await waitFor('the stale checkpoint uploads to be refused', LOG_MS, async () =>
        workers[0]!.log().includes('checkpoint upload failed: attempt is not leased; checkpoint discarded')
          ? true
          : undefined,
      );
      const done = await finished(conn, sweepId, 'the sweep to finish', SWEEP_MS);
      // The results and every epoch's metrics equal the undisturbed run's (resume is exact), and
      // the stale result did not replace the moved attempt's (which resumed from a checkpoint).
      expect(outcome(done)).toEqual(outcome(baseline));
      expect(epochIndices(done)).toEqual(epochIndices(baseline));
      for (const ids of Object.values(epochIndices(done))) expect(ids).toEqual([...Array(EPOCHS).keys()]);
      expect(attemptsOf(done)).toEqual({ ...attemptsOf(baseline), [victim.cellId]: 2 });
      const moved = done.cells.find((c) => c.cellId === victim.cellId)!;
      expect(moved.result!.resumedFromEpoch).toBeGreaterThanOrEqual(victim.checkpointEpochs);
      // The workers' own account: the moved cell started twice (the cut attempt and the one that
      // finished it, on whichever worker was free first), the other once; one result recorded each.
      // A worker says "best val" after the coordinator's answer to its result: wait for that line,
      // which may come a moment after the sweep reads done.
      const recorded = `cell ${victim.cellId}: best val [\\d.]+%\\n`;
      const logs = await waitFor('the recorded result in a worker log', LOG_MS, async () => {
        const text = workers.map((w) => w.log()).join('');
        return new RegExp(recorded).test(text) ? text : undefined;
      });
      const other = done.cells.find((c) => c.cellId !== victim.cellId)!;
      expect([started(logs, victim.cellId), started(logs, other.cellId)]).toEqual([2, 1]);
      expect(logs.match(new RegExp(recorded, 'g')), logs).toHaveLength(1);
    },
    START_MS +
      CUT_AT * EPOCH_MS +
      LEASE_MS +
      EXPIRY_SLACK_MS +
      10_000 +
      (EPOCHS - CUT_AT) * EPOCH_MS +
      STALE_MS +
      LOG_MS +
      SWEEP_MS +
      LOG_MS,
  );
});

describe('a data-parallel cell across network namespaces', () => {
  const dpYaml = sweepYaml('dp', DP_EPOCHS, ', workers: 2');
  /** The same cell with both ranks on loopback in the root namespace (Peer without TLS): its result is the reference. */
  let loopback: SweepStatus;
  beforeAll(async () => {
    const coord = await startCoordinator(['--listen', '127.0.0.1:0', '--state', tmp(), ...FAST]);
    procs.push(coord);
    for (const name of ['lo1', 'lo2'])
      procs.push(startWorker(coord.address, { name, dataRoot, workDir: tmp(), cacheDir: tmp() }));
    const sweepId = await submit({ address: coord.address }, dpYaml);
    loopback = await finished({ address: coord.address }, sweepId, 'the loopback group', START_MS + SWEEP_MS);
    expect(loopback.cells.map((c) => [c.state, c.attempts])).toEqual([['done', 1]]);
    for (const p of procs.splice(0)) await kill(p);
  }, START_MS + SWEEP_MS);

  // Waits: the processes and the sweep (START_MS + SWEEP_MS); the timeout is their sum.
  test(
    'a workers: 2 cell with one rank in each namespace (the ring crosses the bridge over TLS) completes once, with the result of the same group on loopback',
    async () => {
      const { conn, workers } = await cluster();
      const sweepId = await submit(conn, dpYaml);
      const done = await finished(conn, sweepId, 'the group across namespaces', START_MS + SWEEP_MS);
      const [cell] = done.cells;
      expect(cell).toMatchObject({ state: 'done', attempts: 1 });
      expect(epochIndices(done)).toEqual({ [cell!.cellId]: [...Array(DP_EPOCHS).keys()] });
      // One rank per namespace, one generation: rank 0 and rank 1 of 2, each on its own host.
      const rank = (p: Proc): string | undefined =>
        new RegExp(`cell ${cell!.cellId}: rank (\\d) of (\\d) \\(generation 1\\)`).exec(p.log())?.slice(1).join(' of ');
      expect(workers.map(rank).sort()).toEqual(['0 of 2', '1 of 2']);
      const logs = workers.map((w) => w.log()).join('');
      expect(logs).not.toContain('(generation 2)');
      expect(logs.match(/best val/g)).toHaveLength(1);
      expect(logs).toContain(`cell ${cell!.cellId}: rank 1 done`);
      // The transport (TLS over the bridge, or loopback) changes nothing in the group's result.
      expect(outcome(done)).toEqual(outcome(loopback));
    },
    START_MS + SWEEP_MS,
  );
});
