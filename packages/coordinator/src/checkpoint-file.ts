import { open } from 'node:fs/promises';

/**
 * Whether an uploaded file is structurally a ferry checkpoint: a safetensors file (8-byte header
 * length, a JSON header whose tensors' offsets lie inside the data, in order and without overlap)
 * carrying ferry's metadata (`format`; null for a weights file, the best-val artifact). The coordinator holds no TensorFlow.js and never reads the tensors;
 * this is the check that keeps a malformed upload from replacing the last good checkpoint and
 * being streamed to the next worker. Resolves to the reason it is not, or undefined.
 */
export async function checkpointProblem(file: string, format: string | null): Promise<string | undefined> {
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    if (size < 8) return 'shorter than a safetensors header';
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen < 2 || headerLen > 100_000_000 || 8 + headerLen > size)
      return `header length ${headerLen} does not fit the ${size}-byte file`;
    const headerBuf = Buffer.alloc(headerLen);
    await fh.read(headerBuf, 0, headerLen, 8);
    let header: unknown;
    try {
      header = JSON.parse(headerBuf.toString('utf8'));
    } catch {
      return 'the safetensors header is not JSON';
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header))
      return 'the safetensors header is not a JSON object';
    const entries = header as Record<string, unknown>;
    const meta = entries['__metadata__'] as Record<string, unknown> | undefined;
    let parsed: unknown;
    try {
      parsed = typeof meta?.['ferry'] === 'string' ? JSON.parse(meta['ferry']) : undefined;
    } catch {
      parsed = undefined;
    }
    if (format !== null && (parsed as { format?: unknown } | undefined)?.format !== format)
      return `no ${format} metadata: a weights file or something else, not a checkpoint`;
    const dataBytes = size - 8 - headerLen;
    const spans: [number, number][] = [];
    for (const [name, e] of Object.entries(entries)) {
      if (name === '__metadata__') continue;
      const o = (e as { data_offsets?: unknown } | null)?.data_offsets;
      if (
        !Array.isArray(o) ||
        o.length !== 2 ||
        !o.every((x) => Number.isSafeInteger(x) && (x as number) >= 0) ||
        o[0] > o[1] ||
        o[1] > dataBytes
      ) {
        return `tensor ${name}: data_offsets outside the file`;
      }
      spans.push([o[0] as number, o[1] as number]);
    }
    spans.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < spans.length; i++) if (spans[i]![0] < spans[i - 1]![1]) return 'tensors overlap';
    return undefined;
  } finally {
    await fh.close();
  }
}
