import { execFile } from 'node:child_process';

export interface GpuDevice {
  readonly index: number;
  readonly name: string;
  readonly memoryMiB: number;
  readonly driver: string;
}

/** GPUs reported by `nvidia-smi`, or an empty list with the reason when there is none. */
export function listNvidiaGpus(): Promise<{ gpus: GpuDevice[]; reason?: string }> {
  return new Promise((resolve) => {
    execFile(
      'nvidia-smi',
      ['--query-gpu=index,name,memory.total,driver_version', '--format=csv,noheader,nounits'],
      { timeout: 10_000 },
      (err, stdout) => {
        if (err) {
          resolve({
            gpus: [],
            reason: (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'nvidia-smi not found' : err.message,
          });
          return;
        }
        const gpus = stdout
          .trim()
          .split('\n')
          .filter((l) => l.trim().length > 0)
          .map((l) => {
            const [index, name, mem, driver] = l.split(',').map((s) => s.trim());
            return { index: Number(index), name: name ?? '?', memoryMiB: Number(mem), driver: driver ?? '?' };
          });
        resolve({ gpus });
      },
    );
  });
}
