import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import {
  FerryError,
  buildModel,
  countParams,
  extractZip,
  listModels,
  parseWeights,
  readNpy,
  readWeightsFile,
  resolveWeights,
  torchToTf,
  tfToTorch,
  writeNpy,
  writeSafetensors,
  type StateDict,
} from '@ferry/core';
import { torchRefDir } from '../../../test/helpers/torch-ref.js';

const ref = (f: string): string => path.join(torchRefDir(), f);

async function errorOf(p: Promise<unknown> | (() => unknown)): Promise<FerryError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    expect(e).toBeInstanceOf(FerryError);
    return e as FerryError;
  }
  throw new Error('expected an error');
}

describe('model zoo', () => {
  test.each([
    // torchvision's published parameter counts (1000 classes).
    ['resnet18', 11_689_512],
    ['resnet34', 21_797_672],
    ['resnet50', 25_557_032],
    ['mobilenet_v2', 3_504_872],
  ])("%s has torchvision's %i learnable parameters", (name, count) => {
    expect(countParams(buildModel(name, 1000), true)).toBe(count);
  });

  test('every full-size model names an official weight source with a checksum', () => {
    for (const e of listModels().filter((m) => !m.tiny)) {
      expect(e.weights?.url).toMatch(/^https:\/\/download\.pytorch\.org\/models\//);
      expect(e.weights?.sha256Prefix).toMatch(/^[0-9a-f]{8}$/);
      // A pinned full digest must agree with the file name's prefix.
      if (e.weights?.sha256) expect(e.weights.sha256.startsWith(e.weights.sha256Prefix)).toBe(true);
    }
    expect(listModels().find((m) => m.name === 'resnet18')!.weights!.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  test('an unknown model is refused with the list of known ones', async () => {
    const e = await errorOf(() => buildModel('resnet19', 10));
    expect(e.code).toBe('FERRY_ERR_UNKNOWN_MODEL');
    expect(e.message).toContain('resnet18');
  });
});

describe('weight import', () => {
  test('.pth and .safetensors of the same torchvision state_dict load identically', async () => {
    const a = (await readWeightsFile(ref('resnet18.pth'))).tensors;
    const b = (await readWeightsFile(ref('resnet18.safetensors'))).tensors;
    expect([...a.keys()]).toEqual([...b.keys()]);
    for (const [k, t] of a) {
      const other = b.get(k)!.data;
      expect(other.length, k).toBe(t.data.length);
      let same = true;
      for (let i = 0; i < other.length && same; i++) same = Object.is(other[i], t.data[i]);
      expect(same, k).toBe(true);
    }
    expect(a.get('layer2.0.downsample.0.weight')!.shape).toEqual([128, 64, 1, 1]);
    expect(a.get('bn1.num_batches_tracked')!.dtype).toBe('int64');
  });

  test('a 1000-way checkpoint loaded for 10 classes keeps the backbone and replaces the head', async () => {
    const model = buildModel('resnet18', 10);
    const { tensors } = await readWeightsFile(ref('resnet18.pth'));
    const r = resolveWeights(model, tensors, 'resnet18.pth');
    expect(r.headReplaced).toBe(true);
    expect(r.fileClasses).toBe(1000);
    expect(r.values.has('fc.weight')).toBe(false);
    expect(r.values.has('layer4.1.bn2.running_var')).toBe(true);
  });

  test('weights of another architecture fail before training, naming the tensors', async () => {
    const { tensors } = await readWeightsFile(ref('resnet18.pth'));
    const e = await errorOf(() => resolveWeights(buildModel('resnet50', 1000), tensors, 'resnet18.pth'));
    expect(e.code).toBe('FERRY_ERR_WEIGHTS_MISMATCH');
    expect(e.message).toMatch(
      /shape mismatch for layer1\.0\.conv1\.weight: file has \[64, 64, 3, 3\], resnet50 expects \[64, 64, 1, 1\]/,
    );
    expect(e.message).toMatch(/missing tensor layer1\.0\.conv3\.weight/);
  });

  test('a missing tensor and an unexpected one are both reported', async () => {
    const { tensors } = await readWeightsFile(ref('resnet18.pth'));
    const edited: StateDict = new Map(tensors);
    edited.delete('layer3.1.bn1.running_mean');
    edited.set('extra.weight', { dtype: 'float32', shape: [1], data: new Float32Array(1) });
    const e = await errorOf(() => resolveWeights(buildModel('resnet18', 1000), edited, 'edited'));
    expect(e.message).toContain('missing tensor layer3.1.bn1.running_mean');
    expect(e.message).toContain('unexpected tensor extra.weight');
  });

  test('a truncated .pth fails with FERRY_ERR_WEIGHTS_CORRUPT, not a crash', async () => {
    const bytes = readFileSync(ref('resnet18.pth'));
    for (const cut of [100, bytes.length / 2, bytes.length - 10]) {
      const e = await errorOf(() => parseWeights(bytes.subarray(0, Math.floor(cut)), 'cut.pth'));
      expect(e.code).toBe('FERRY_ERR_WEIGHTS_CORRUPT');
      expect(e.message).toContain('cut.pth');
    }
  });

  test('a truncated .safetensors and an empty file are refused', async () => {
    const bytes = readFileSync(ref('mobilenet_v2.safetensors'));
    expect((await errorOf(() => parseWeights(bytes.subarray(0, bytes.length - 1000), 'm.safetensors'))).code).toBe(
      'FERRY_ERR_WEIGHTS_CORRUPT',
    );
    expect((await errorOf(() => parseWeights(new Uint8Array(0), 'empty'))).message).toContain('empty');
  });

  test('malformed safetensors headers are FERRY_ERR_WEIGHTS_CORRUPT naming the problem, checked before anything is allocated', async () => {
    const file = (header: unknown, data = new Uint8Array(16)): Uint8Array => {
      const h = Buffer.from(JSON.stringify(header));
      const out = new Uint8Array(8 + h.length + data.length);
      new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
      out.set(h, 8);
      out.set(data, 8 + h.length);
      return out;
    };
    const cases: [unknown, string][] = [
      [[1, 2], 'not a JSON object'],
      [
        { w: { dtype: 'F32', shape: 'x', data_offsets: [0, 4] } },
        'tensor w: shape must be a list of non-negative integers',
      ],
      [{ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 'tensor w: shape must be a list'],
      [{ w: { dtype: 'F32', shape: [1], data_offsets: [-8, -4] } }, 'tensor w: data_offsets must be [begin, end]'],
      [{ w: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }, 'data_offsets must be [begin, end]'],
      [{ w: { dtype: 'F32', shape: [1], data_offsets: 'x' } }, 'data_offsets must be [begin, end]'],
      [{ w: { dtype: 'F32', shape: [65536, 65536], data_offsets: [0, 16] } }, 'elements is more than the'],
      [{ w: { dtype: 'F32', shape: [8], data_offsets: [0, 32] } }, 'tensor w is truncated'],
      [{ w: { dtype: 'Q4', shape: [1], data_offsets: [0, 4] } }, 'unsupported dtype "Q4"'],
      [{ w: null }, 'unsupported dtype'],
      [{ __metadata__: { a: 1 } }, '__metadata__ must map names to strings'],
    ];
    for (const [header, why] of cases) {
      const e = await errorOf(() => parseWeights(file(header), 'bad.safetensors'));
      expect(e.code, JSON.stringify(header)).toBe('FERRY_ERR_WEIGHTS_CORRUPT');
      expect(e.message, JSON.stringify(header)).toContain(why);
    }
    // A header length past the format's limit is refused from the first 8 bytes.
    const huge = new Uint8Array(16);
    new DataView(huge.buffer).setBigUint64(0, 2n ** 40n, true);
    expect((await errorOf(() => parseWeights(huge, 'huge.safetensors'))).message).toContain('100 MB limit');
  });

  test('malformed .npy arrays are FERRY_ERR_INVALID_ARGUMENT with the reason, checked before allocation', async () => {
    const good = writeNpy(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    expect(readNpy(good, 'good.npy')).toEqual({ shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) });
    const withShape = (shape: string): Uint8Array =>
      Buffer.from(Buffer.from(good).toString('latin1').replace("'shape': (2, 3)", `'shape': ${shape}`), 'latin1');
    const cases: [Uint8Array, string][] = [
      [good.subarray(0, good.length - 4), 'but the file holds 20 (truncated?)'],
      [withShape('(8000, 8000)'), 'declares shape (8000, 8000) <f4, 256000000 bytes'],
      [withShape("(-2, 'x')"), 'must hold non-negative integers'],
      [new Uint8Array([1, 2, 3]), 'not a .npy file'],
    ];
    for (const [bytes, why] of cases) {
      const e = await errorOf(() => readNpy(bytes, 'bad.npy'));
      expect(e.code).toBe('FERRY_ERR_INVALID_ARGUMENT');
      expect(e.message).toContain(why);
    }
  });

  test('zip bombs: an entry declaring more than the limit, or inflating past its declared size, is refused before memory runs out', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-zip-'));
    const bomb = path.join(dir, 'bomb.zip');
    const liar = path.join(dir, 'liar.zip');
    // 64 MiB of zeros deflate to about 64 KiB; the liar's directory says its entry holds 1,000 bytes.
    execFileSync('/usr/bin/python3', [
      '-c',
      `import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr('d/train/a/0.jpg', bytes(64 << 20))
data = bytearray(open(sys.argv[1], 'rb').read())
for sig, at in ((b'PK\\x03\\x04', 22), (b'PK\\x01\\x02', 24)):
    i = data.find(sig)
    data[i + at:i + at + 4] = (1000).to_bytes(4, 'little')
open(sys.argv[2], 'wb').write(data)`,
      bomb,
      liar,
    ]);
    const limits = { maxEntryBytes: 1 << 20, maxTotalBytes: 1 << 30 };
    const e1 = await errorOf(extractZip(bomb, path.join(dir, 'out1'), limits));
    expect(e1.code).toBe('FERRY_ERR_DATASET');
    expect(e1.message).toContain('would inflate to 67108864 bytes, over the 1048576-byte limit per entry');
    const e2 = await errorOf(extractZip(liar, path.join(dir, 'out2')));
    expect(e2.code).toBe('FERRY_ERR_DATASET');
    expect(e2.message).toContain('does not inflate to its declared 1000 bytes');
    // Within the limits the same archive extracts.
    expect(await extractZip(bomb, path.join(dir, 'out3'), { maxEntryBytes: 1 << 27, maxTotalBytes: 1 << 30 })).toBe(1);
  });

  test('a .pth declaring a tensor larger than its storage (stride 0) or a malformed rebuild is refused before allocation', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-pth-'));
    const out = path.join(dir, 'x.pth');
    const script = `import sys, torch
kind = sys.argv[2]
if kind == 'expanded':
    t = torch.zeros(1).expand(8000, 8000)
    torch.save({'fc.weight': t}, sys.argv[1])
`;
    execFileSync('/usr/bin/python3', ['-c', script, out, 'expanded']);
    const e = await errorOf(readWeightsFile(out));
    expect(e.code).toBe('FERRY_ERR_WEIGHTS_CORRUPT');
    expect(e.message).toContain('shape [8000, 8000] has 64000000 elements, more than its 4-byte storage holds');
  });

  test('a legacy (pre-1.6) torch file is refused with how to convert it', async () => {
    const e = await errorOf(readWeightsFile(ref('legacy.pth')));
    expect(e.code).toBe('FERRY_ERR_UNSUPPORTED_FORMAT');
    expect(e.message).toContain('torch.save');
  });

  test('layout conversion round-trips for every parameter kind', () => {
    const model = buildModel('mobilenet_v2_tiny', 3);
    const kinds = new Set<string>();
    for (const spec of model.params) {
      if (kinds.has(spec.kind)) continue;
      kinds.add(spec.kind);
      const n = spec.shape.reduce((a, b) => a * b, 1);
      const src = Float32Array.from({ length: n }, (_, i) => i);
      expect(tfToTorch(spec, torchToTf(spec, src))).toEqual(src);
    }
    expect([...kinds].sort()).toEqual([
      'bias',
      'bn_bias',
      'bn_mean',
      'bn_var',
      'bn_weight',
      'conv',
      'depthwise',
      'linear',
    ]);
  });

  test('conv weights go OIHW -> HWIO: element [o,i,h,w] lands at [h,w,i,o]', () => {
    const spec = buildModel('resnet_tiny', 2).params.find((p) => p.name === 'conv1.weight')!;
    const [o, i, h, w] = spec.torchShape as [number, number, number, number];
    const src = Float32Array.from({ length: o * i * h * w }, (_, k) => k);
    const out = torchToTf(spec, src);
    const at = (oo: number, ii: number, hh: number, ww: number): number => ((oo * i + ii) * h + hh) * w + ww;
    expect(out[((2 * w + 5) * i + 1) * o + 3]).toBe(src[at(3, 1, 2, 5)]);
  });

  test('safetensors written by ferry read back bit-exactly', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-st-'));
    const state: StateDict = new Map([
      ['a', { dtype: 'float32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, -6.5]) }],
      ['b', { dtype: 'float32', shape: [1], data: Float32Array.from([Math.PI]) }],
    ]);
    const file = path.join(dir, 'x.safetensors');
    writeFileSync(file, writeSafetensors(state, { note: 'hi' }));
    const back = parseWeights(readFileSync(file), file);
    expect(back.metadata['note']).toBe('hi');
    expect(back.tensors.get('a')!.data).toEqual(state.get('a')!.data);
    expect(back.tensors.get('b')!.shape).toEqual([1]);
  });
});
