/**
 * The batch script of ferry's worker jobs: one `ferry worker` per array task, written to
 * `<out>/slurm/worker.sbatch` so that a user can read it, or submit it by hand (`sbatch --array=0-3
 * worker.sbatch`). Pure: the same plan gives the same text.
 */

export interface WorkerJobPlan {
  /** The sweep's name: the jobs are `ferry-<name>` in squeue. */
  readonly sweep: string;
  /** Node and ferry's entry script, as this process runs them (the nodes share the file system). */
  readonly node: string;
  readonly bin: string;
  /** host:port the workers dial. */
  readonly coordinator: string;
  /** The coordinator's token, in a file only the user can read. */
  readonly tokenFile: string;
  /** The CA the workers trust for the coordinator's certificate (TLS off loopback). */
  readonly tlsCa?: string;
  readonly tlsServerName?: string;
  readonly dataRoot: string;
  /** Each task's work folder goes under it (`slurm-<array>_<task>`). */
  readonly workRoot: string;
  /** Each task's log: `<logDir>/slurm-<array>_<task>.log`. */
  readonly logDir: string;
  readonly backend: string;
  readonly nats?: string;
  /** `--gres` of each task (e.g. `gpu:1`), or undefined for CPUs only. */
  readonly gres?: string;
  readonly cpusPerTask: number;
  readonly partition?: string;
  readonly account?: string;
  readonly time?: string;
  readonly qos?: string;
  /** SIGTERM this long before the time limit: the worker gives its cell back and exits in time. */
  readonly signalSeconds: number;
  /** A worker whose coordinator has not answered for this long ends its job (its run is gone). */
  readonly giveUpAfterMs: number;
}

/** A word for bash: single-quoted unless it is plainly safe. */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`;
}

export function workerBatchScript(p: WorkerJobPlan): string {
  const directives = [
    `--job-name=${`ferry-${p.sweep}`.replace(/\s+/g, '-')}`,
    `--output=${p.logDir}/slurm-%A_%a.log`,
    '--open-mode=append',
    // B: the batch shell itself gets it, which is the worker (exec below).
    `--signal=B:TERM@${p.signalSeconds}`,
    `--cpus-per-task=${p.cpusPerTask}`,
    '--ntasks=1',
    ...(p.gres ? [`--gres=${p.gres}`] : []),
    ...(p.partition ? [`--partition=${p.partition}`] : []),
    ...(p.account ? [`--account=${p.account}`] : []),
    ...(p.time ? [`--time=${p.time}`] : []),
    ...(p.qos ? [`--qos=${p.qos}`] : []),
  ];
  const worker = [
    p.node,
    p.bin,
    'worker',
    '--coordinator',
    p.coordinator,
    '--token-file',
    p.tokenFile,
    ...(p.tlsCa ? ['--tls-ca', p.tlsCa] : []),
    ...(p.tlsServerName ? ['--tls-server-name', p.tlsServerName] : []),
    '--data-root',
    p.dataRoot,
    '--backend',
    p.backend,
    '--poll-ms',
    '1000',
    '--give-up-after-ms',
    String(p.giveUpAfterMs),
    ...(p.nats ? ['--nats', p.nats] : []),
  ]
    .map(shellQuote)
    .join(' ');
  return `#!/bin/bash
# ferry's worker jobs for sweep "${p.sweep}", written by \`ferry run --slurm\`: each array task is one
# ferry worker that takes cells from the coordinator until the sweep is done, its time limit comes
# (SIGTERM ${p.signalSeconds} s before it: the worker gives its cell back, which resumes from its last
# checkpoint on another worker) or the job is cancelled.
${directives.map((d) => `#SBATCH ${d}`).join('\n')}
set -euo pipefail
task="\${SLURM_ARRAY_JOB_ID:-\$SLURM_JOB_ID}_\${SLURM_ARRAY_TASK_ID:-0}"
threads="\${SLURM_CPUS_PER_TASK:-1}"
# The task's cores for libtorch's and wasm's threads and for image decoding, no more.
export FERRY_TORCH_THREADS="$threads" FERRY_WASM_THREADS="$threads"
exec ${worker} --work-dir ${shellQuote(p.workRoot)}/"slurm-$task" --name "slurm-$task" --threads "$threads"
`;
}
