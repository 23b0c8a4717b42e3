import { LIMITS, limits } from '@ferry/common';
import { inflateRawSync } from 'node:zlib';

/** A minimal ZIP reader (stored and deflated entries, ZIP64) for torch.save archives. */
export interface ZipEntry {
  readonly name: string;
  readonly method: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly localHeaderOffset: number;
}

export class ZipFormatError extends Error {}

const EOCD_SIG = 0x06054b50;
const EOCD64_LOCATOR_SIG = 0x07064b50;
const EOCD64_SIG = 0x06064b50;
const CEN_SIG = 0x02014b50;
const LOC_SIG = 0x04034b50;

/** How much a reader may inflate: per entry and over the archive's life (zip bombs). */
export interface ZipLimits {
  readonly maxEntryBytes: number;
  readonly maxTotalBytes: number;
}

/** The zip limits in force (`--max-zip-entry-bytes`, `--max-zip-total-bytes`). */
export function zipLimits(): ZipLimits {
  const l = limits();
  return { maxEntryBytes: l.maxZipEntryBytes, maxTotalBytes: l.maxZipTotalBytes };
}

export class ZipReader {
  readonly entries: ReadonlyMap<string, ZipEntry>;
  private inflated = 0;

  constructor(
    private readonly buf: Uint8Array,
    private readonly limits: ZipLimits = zipLimits(),
  ) {
    this.entries = this.readDirectory();
  }

  static isZip(buf: Uint8Array): boolean {
    return buf.length >= 4 && buf[0] === 0x50 && buf[1] === 0x4b && buf[2] === 0x03 && buf[3] === 0x04;
  }

  private view(offset: number, length: number): DataView {
    if (offset < 0 || offset + length > this.buf.length) throw new ZipFormatError('archive is truncated');
    return new DataView(this.buf.buffer, this.buf.byteOffset + offset, length);
  }

  private readDirectory(): Map<string, ZipEntry> {
    const buf = this.buf;
    let eocd = -1;
    const stop = Math.max(0, buf.length - 22 - 0xffff);
    for (let i = buf.length - 22; i >= stop; i--) {
      if (buf[i] === 0x50 && buf[i + 1] === 0x4b && buf[i + 2] === 0x05 && buf[i + 3] === 0x06) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw new ZipFormatError('no end-of-central-directory record (file truncated?)');
    const e = this.view(eocd, 22);
    if (e.getUint32(0, true) !== EOCD_SIG) throw new ZipFormatError('bad end-of-central-directory record');
    let count = e.getUint16(10, true);
    let cdSize = e.getUint32(12, true);
    let cdOffset = e.getUint32(16, true);
    if (count === 0xffff || cdOffset === 0xffffffff || cdSize === 0xffffffff) {
      const loc = this.view(eocd - 20, 20);
      if (loc.getUint32(0, true) !== EOCD64_LOCATOR_SIG) throw new ZipFormatError('missing ZIP64 locator');
      const e64off = Number(loc.getBigUint64(8, true));
      const e64 = this.view(e64off, 56);
      if (e64.getUint32(0, true) !== EOCD64_SIG) throw new ZipFormatError('bad ZIP64 end record');
      count = Number(e64.getBigUint64(32, true));
      cdSize = Number(e64.getBigUint64(40, true));
      cdOffset = Number(e64.getBigUint64(48, true));
    }
    const entries = new Map<string, ZipEntry>();
    let p = cdOffset;
    const decoder = new TextDecoder();
    for (let i = 0; i < count; i++) {
      const h = this.view(p, 46);
      if (h.getUint32(0, true) !== CEN_SIG) throw new ZipFormatError('bad central directory entry');
      const method = h.getUint16(10, true);
      let compressedSize = h.getUint32(20, true);
      let size = h.getUint32(24, true);
      const nameLen = h.getUint16(28, true);
      const extraLen = h.getUint16(30, true);
      const commentLen = h.getUint16(32, true);
      let localHeaderOffset = h.getUint32(42, true);
      const name = decoder.decode(this.buf.subarray(p + 46, p + 46 + nameLen));
      // ZIP64 extended information: the 64-bit values appear in order for fields set to 0xffffffff.
      let x = p + 46 + nameLen;
      const xEnd = x + extraLen;
      while (x + 4 <= xEnd) {
        const xv = this.view(x, 4);
        const id = xv.getUint16(0, true);
        const len = xv.getUint16(2, true);
        if (id === 0x0001) {
          let q = x + 4;
          const read = (): number => {
            const v = Number(this.view(q, 8).getBigUint64(0, true));
            q += 8;
            return v;
          };
          if (size === 0xffffffff) size = read();
          if (compressedSize === 0xffffffff) compressedSize = read();
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = read();
        }
        x += 4 + len;
      }
      entries.set(name, { name, method, compressedSize, size, localHeaderOffset });
      p = xEnd + commentLen;
    }
    return entries;
  }

  /** The bytes of one entry (a view for stored entries, no copy). */
  read(name: string): Uint8Array {
    const e = this.entries.get(name);
    if (!e) throw new ZipFormatError(`archive has no entry ${name}`);
    const h = this.view(e.localHeaderOffset, 30);
    if (h.getUint32(0, true) !== LOC_SIG) throw new ZipFormatError(`bad local header for ${name}`);
    const start = e.localHeaderOffset + 30 + h.getUint16(26, true) + h.getUint16(28, true);
    if (start + e.compressedSize > this.buf.length) throw new ZipFormatError(`entry ${name} is truncated`);
    const raw = this.buf.subarray(start, start + e.compressedSize);
    if (e.method === 0) return raw;
    if (e.method === 8) {
      // The declared size bounds the output before anything is inflated: a bomb that declares its
      // size is refused here, one that lies is cut off by zlib at the declared size.
      if (e.size > this.limits.maxEntryBytes) {
        throw new ZipFormatError(
          `entry ${name} would inflate to ${e.size} bytes, over the ${this.limits.maxEntryBytes}-byte limit per entry (${LIMITS.maxZipEntryBytes.flag})`,
        );
      }
      if (this.inflated + e.size > this.limits.maxTotalBytes) {
        throw new ZipFormatError(
          `inflating ${name} would pass the archive's ${this.limits.maxTotalBytes}-byte limit (${LIMITS.maxZipTotalBytes.flag})`,
        );
      }
      let out: Buffer;
      try {
        out = inflateRawSync(raw, { maxOutputLength: Math.max(1, e.size) });
      } catch (err) {
        throw new ZipFormatError(
          `entry ${name} does not inflate to its declared ${e.size} bytes (${(err as Error).message})`,
        );
      }
      if (out.length !== e.size)
        throw new ZipFormatError(`entry ${name} inflates to ${out.length} bytes, not its declared ${e.size}`);
      this.inflated += out.length;
      return new Uint8Array(out.buffer, out.byteOffset, out.length);
    }
    throw new ZipFormatError(`entry ${name} uses unsupported compression method ${e.method}`);
  }
}
