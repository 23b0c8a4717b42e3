import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { download, readNpy, studyTransforms, transformImage } from '@ferry/core';
import { ferry, ferryBin } from '../../../test/helpers/cli.js';
import { readNpy64, torchRefDir } from '../../../test/helpers/torch-ref.js';

const ref = (f: string): string => path.join(torchRefDir(), f);

describe('ferry models / info', () => {
  test('models lists the zoo with torchvision parameter counts', async () => {
    const r = await ferry(['models', '--json']);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as { name: string; parameters: number; weights: string | null }[];
    expect(rows.find((m) => m.name === 'resnet18')).toMatchObject({ parameters: 11_689_512 });
    expect(rows.find((m) => m.name === 'mobilenet_v2')?.weights).toContain('mobilenet_v2-b0353104.pth');
  });

  test('info reports the chosen backend and a reason for every unavailable one', async () => {
    const r = await ferry(['info', '--json', '--backend', 'wasm']);
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout) as {
      backend: { name: string; registeredKernels: string[] };
      backends: { name: string; available: boolean; reason: string | null }[];
      tfjs: string;
    };
    expect(info.backend.name).toBe('wasm');
    expect(info.backend.registeredKernels.join('\n')).toContain('Conv2DBackpropFilter');
    expect(info.backends.map((b) => b.name)).toEqual([
      'tensorflow-gpu',
      'tensorflow',
      'webgpu',
      'torch',
      'wasm',
      'cpu',
    ]);
    for (const b of info.backends) if (!b.available) expect(b.reason, b.name).toMatch(/\w+/);
    // scripts/test.sh installs libtorch-dev and builds the addon: torch loads, and says what it runs on.
    const torch = info.backends.find((b) => b.name === 'torch') as { available: boolean; device: string } | undefined;
    expect(torch).toMatchObject({ available: true });
    expect(torch?.device).toMatch(/^cpu \(libtorch \d+\.\d+\.\d+, \d+ threads?/);
    expect(info.backends.find((b) => b.name === 'cpu')?.available).toBe(true);
    expect(info.tfjs).toBe('4.22.0');
  });

  test("info reports the WebGPU adapter, ferry's WebGPU kernels and timestamp queries; auto passes over a software adapter", async () => {
    interface Info {
      backend: { name: string; registeredKernels: string[] };
      backends: { name: string; available: boolean; device: string | null }[];
      webgpu: {
        adapter: string;
        software: boolean;
        fastKernels: string[];
        timestampQuery: { offeredByAdapter: boolean; enabled: boolean | null };
      } | null;
    }
    // The test machines' WebGPU is Mesa's lavapipe (scripts/test.sh installs it): a CPU adapter,
    // which auto passes over for torch; on a host whose Dawn finds a real GPU, auto takes it instead.
    const auto = JSON.parse((await ferryBin(['info', '--json'])).stdout) as Info;
    expect(auto.webgpu).not.toBeNull();
    const software = auto.webgpu!.software;
    expect(auto.backend.name).toBe(software ? 'torch' : 'webgpu');
    expect(auto.webgpu!.fastKernels.map((k) => k.split(':')[0])).toEqual([
      'Conv2DBackpropFilter',
      'DepthwiseConv2dNativeBackpropFilter',
      'Conv2DBackpropInput',
    ]);
    if (software) expect(auto.webgpu!.timestampQuery.enabled).toBeNull();

    const gpu = JSON.parse(
      (await ferryBin(['info', '--json', '--backend', 'webgpu'], { FERRY_WEBGPU_PROFILE: '1' })).stdout,
    ) as Info;
    expect(gpu.backend.name).toBe('webgpu');
    expect(gpu.backend.registeredKernels.join('\n')).toContain('im2col');
    expect(gpu.webgpu!.timestampQuery.enabled).toBe(gpu.webgpu!.timestampQuery.offeredByAdapter);

    // auto decides on a software adapter in a child process: nothing of lavapipe's on stderr.
    const quiet = await ferryBin([
      'predict',
      '--model',
      'resnet18',
      '--weights',
      ref('resnet18.pth'),
      '--input',
      ref('resnet18_input.npy'),
      '--json',
    ]);
    expect(quiet.code).toBe(0);
    expect(quiet.stderr).toBe('');

    const plain = JSON.parse(
      (await ferryBin(['info', '--json', '--backend', 'webgpu'], { FERRY_WEBGPU_FAST: '0' })).stdout,
    ) as Info;
    expect(plain.backend.registeredKernels).toEqual([]);
    const text = (await ferryBin(['info', '--backend', 'webgpu'])).stdout;
    expect(text).toMatch(software ? /webgpu adapter: .*llvmpipe/ : /webgpu adapter: \S/);
    expect(text).toContain('timestamp queries');
  });

  test('every command and subcommand prints its own help (usage, options with defaults, an example, the input limits); ferry help CMD [SUB] prints the same', async () => {
    const { buildProgram } = await import('../src/program.js');
    const program = buildProgram({
      io: { env: {}, stdout: process.stdout, stderr: process.stderr },
      argv: [],
      code: 0,
    });
    const paths = program.commands.flatMap((c) => [[c.name()], ...c.commands.map((s) => [c.name(), s.name()])]);
    expect(paths.length).toBeGreaterThan(20);
    for (const p of paths.filter((x) => x.at(-1) !== 'help')) {
      const r = await ferry([...p, '--help']);
      expect(r.code, p.join(' ')).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^ferry ${p.join(' ')}: \\S`));
      expect(r.stdout).toContain(`usage: ferry ${p.join(' ')} `);
      expect(r.stdout, p.join(' ')).toMatch(/^examples?:\n {2}ferry /m);
      expect(r.stdout).toContain('--max-image-pixels N');
      expect(r.stdout).not.toMatch(/^ {2}models\b/m); // not the list of commands
      const cmd = p.reduce((c, name) => c.commands.find((x) => x.name() === name)!, program);
      for (const o of cmd.options.filter((x) => x.defaultValue !== undefined && !x.negate))
        expect(r.stdout, `${p.join(' ')} ${o.long}`).toMatch(new RegExp(`${o.long}[^\\n]*(\\n {20,}[^\\n]*)*default:`));
      expect((await ferry(['help', ...p])).stdout).toBe(r.stdout);
    }
    for (const [cmd, flag] of [
      [['run'], '--serve'],
      [['sweep', 'results'], '--format <md|csv|json|html>'],
      [['dashboard'], '--run <runs/SWEEP>'],
      [['coordinator'], '--recovery-grace-ms'],
      [['train'], '-d, --data <DATASET>'],
      [['data'], 'stats DIR'],
    ] as const)
      expect((await ferry([...cmd, '--help'])).stdout).toContain(flag);
    // A --no-X flag says what passing it does, not what the default does.
    expect((await ferry(['train', '--help'])).stdout.replace(/\s+/g, ' ')).toMatch(
      /--no-cache no feature cache: a frozen backbone .* every epoch instead of once/,
    );
    const top = await ferry(['--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toContain('commands:');
    expect(top.stdout).toMatch(/^ {2}run SWEEP\.yaml +the embedded default/m);
    expect(top.stdout).toMatch(/^ {2}sweep submit\|status\|results\|artifacts\|retry\|cancel\|list +/m);
    expect((await ferry(['help'])).stdout).toBe(top.stdout);
    const version = await ferry(['--version']);
    expect([version.code, version.stdout.trim()]).toEqual([0, '0.1.0']);
  });

  test('usage errors exit 2 with the code, what to do, the usage line and the nearest known option or command', async () => {
    const option = await ferry(['run', 'x.yaml', '--worker', '2']);
    expect(option.code).toBe(2);
    expect(option.stderr).toContain("ferry run: unknown option '--worker' (Did you mean --workers?)");
    expect(option.stderr).toContain('[FERRY_ERR_INVALID_ARGUMENT]');
    expect(option.stderr).toContain('what to do: ');
    expect(option.stderr).toContain('usage: ferry run [options] <SWEEP.yaml>');
    const command = await ferry(['sweeps', 'list']);
    expect(command.code).toBe(2);
    expect(command.stderr).toContain("ferry: unknown command 'sweeps' (Did you mean sweep?)");
    const sub = await ferry(['sweep', 'stats', 'x']);
    expect(sub.code).toBe(2);
    expect(sub.stderr).toContain("ferry sweep: unknown command 'stats' (Did you mean status?)");
    const value = await ferry(['run', 'x.yaml', '--workers', 'two']);
    expect(value.code).toBe(2);
    expect(value.stderr).toContain(
      'ferry run: --workers must be an integer >= 1 (got "two") [FERRY_ERR_INVALID_ARGUMENT]',
    );
    const limit = await ferry(['models', '--max-image-pixels', '5', '--json']);
    expect(limit.code).toBe(0);
    const none = await ferry([]);
    expect(none.code).toBe(2);
    expect(none.stdout).toContain('commands:');
    const missing = await ferry(['sweep']);
    expect(missing.code).toBe(2);
  });

  test("train's defaults are DEFAULT_CELL's", async () => {
    const { DEFAULT_CELL } = await import('@ferry/core');
    const { buildProgram } = await import('../src/program.js');
    const program = buildProgram({
      io: { env: {}, stdout: process.stdout, stderr: process.stderr },
      argv: [],
      code: 0,
    });
    const train = program.commands.find((c) => c.name() === 'train')!;
    const d = (name: string): unknown => train.options.find((o) => o.attributeName() === name)?.defaultValue;
    expect({
      epochs: d('epochs'),
      batchSize: d('batch'),
      lr: d('lr'),
      momentum: d('momentum'),
      weightDecay: d('wd'),
      lrStepEpochs: d('lrStep'),
      lrGamma: d('lrGamma'),
      seed: d('seed'),
      imageSize: d('size'),
      augmentViews: d('views'),
      microBatch: d('microBatch'),
      color: d('color'),
    }).toEqual({
      epochs: DEFAULT_CELL.epochs,
      batchSize: DEFAULT_CELL.batchSize,
      lr: DEFAULT_CELL.lr,
      momentum: DEFAULT_CELL.momentum,
      weightDecay: DEFAULT_CELL.weightDecay,
      lrStepEpochs: DEFAULT_CELL.lrStepEpochs,
      lrGamma: DEFAULT_CELL.lrGamma,
      seed: DEFAULT_CELL.seed,
      imageSize: DEFAULT_CELL.imageSize,
      augmentViews: DEFAULT_CELL.augmentViews,
      microBatch: DEFAULT_CELL.microBatch,
      color: DEFAULT_CELL.color,
    });
  });

  test('bad input exits 2 with a message naming the problem', async () => {
    const unknown = await ferry(['predict', '--model', 'resnet19', '--weights', 'x', '--input', 'y']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('FERRY_ERR_UNKNOWN_MODEL');
    const flag = await ferry(['models', '--frobnicate']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain('usage: ferry models');
    expect((await ferry(['nope'])).code).toBe(2);
  });
});

/**
 * ferry's float32 logits against torch's float64 ones: within 16x the distance torch's own float32
 * run on the same weights and input lands from float64, or 1e-6 of the logits' scale if larger (the
 * factor and the floor as in packages/core/test/parity.test.ts, which says how they were chosen).
 */
function logitTolerance(want64: Float64Array, torch32: Float32Array): { tolerance: number; torch32: number } {
  const err = Math.max(...Array.from(want64, (w, i) => Math.abs(torch32[i]! - w)));
  const scale = Math.max(...Array.from(want64, Math.abs));
  return { tolerance: 16 * Math.max(err, 1e-6 * scale), torch32: err };
}

describe('ferry predict', () => {
  test("the built binary prints resnet18 logits equal to torchvision's float64 ones within float32's error", async () => {
    const r = await ferryBin([
      'predict',
      '--model',
      'resnet18',
      '--weights',
      ref('resnet18.pth'),
      '--input',
      ref('resnet18_input.npy'),
      '--backend',
      'wasm',
      '--json',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const got = (JSON.parse(r.stdout) as { logits: number[][] }).logits.flat();
    const want = readNpy64(ref('resnet18_logits.npy')).data;
    const { tolerance, torch32 } = logitTolerance(want, readNpy(readFileSync(ref('resnet18_logits_f32.npy'))).data);
    expect(got).toHaveLength(want.length);
    const diff = Math.max(...got.map((v, i) => Math.abs(v - want[i]!)));
    expect(diff, JSON.stringify({ torch32, tolerance })).toBeLessThan(tolerance);
  });

  test("--image: torchvision's val transform, then torchvision's float64 top-k classes and probabilities within float32's error", async () => {
    // A lossless 256 x 301 picture (test/fixtures/torch_reference.py): Resize(256) leaves it as it
    // is in both pipelines, so the pixels ferry's network sees must be torchvision's own: CenterCrop
    // rows from round(38.5) = 38 (half to even), columns from 16, (v / 255 - mean) / std. torchvision
    // did it in float64; ferry's float32 may differ by its rounding of each value, 2^-24 |value|
    // (plus 1e-14 for float64's own rounding of the arithmetic).
    const photo = ref('photo.png');
    const pixels = await transformImage(photo, studyTransforms(224).val, 0);
    const input = readNpy64(ref('photo_input.npy'));
    expect(input.shape).toEqual([1, 3, 224, 224]);
    let worst = { excess: 0, at: '' };
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 224; y++)
        for (let x = 0; x < 224; x++) {
          const w = input.data[(c * 224 + y) * 224 + x]!;
          const excess = Math.abs(pixels[(y * 224 + x) * 3 + c]! - w) / (2 ** -24 * Math.abs(w) + 1e-14);
          if (excess > worst.excess) worst = { excess, at: `channel ${c} row ${y} column ${x}` };
        }
    expect(worst.excess, `|ferry - torchvision| / float32 rounding, worst at ${worst.at}`).toBeLessThanOrEqual(1);

    const r = await ferry([
      'predict',
      '--model',
      'resnet18',
      '--weights',
      ref('resnet18.pth'),
      '--image',
      photo,
      '--top',
      '5',
      '--backend',
      'wasm',
      '--json',
    ]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { top: { index: number; probability: number; logit: number }[] };
    // torchvision's float64 answer for the same weights and pixels (its eval-mode resnet18).
    const z = readNpy64(ref('photo_logits.npy')).data;
    const { tolerance, torch32 } = logitTolerance(z, readNpy(readFileSync(ref('photo_logits_f32.npy'))).data);
    const max = Math.max(...z);
    const sum = z.reduce((a, v) => a + Math.exp(v - max), 0);
    const order = Array.from(z.keys()).sort((i, j) => z[j]! - z[i]!);
    // The order is decided: consecutive logits of the reference's top 6 differ by more than two
    // tolerances, so no error within the tolerance can swap two of the top 5 or bring in a sixth.
    for (let k = 0; k < 5; k++) expect(z[order[k]!]! - z[order[k + 1]!]!).toBeGreaterThan(2 * tolerance);
    expect(out.top.map((t) => t.index)).toEqual(order.slice(0, 5));
    // Logits within `tolerance` move a softmax probability p by at most p (e^(2 tolerance) - 1):
    // exp(z_i + d_i) / sum_j exp(z_j + d_j) with |d| <= tolerance is within e^(+-2 tolerance) of p.
    for (const t of out.top) {
      const p = Math.exp(z[t.index]! - max) / sum;
      expect(Math.abs(t.logit - z[t.index]!), `logit of class ${t.index}`).toBeLessThan(tolerance);
      expect(Math.abs(t.probability - p), `probability of class ${t.index} (${p})`).toBeLessThanOrEqual(
        p * Math.expm1(2 * tolerance) + 1e-15,
      );
    }
    // The probabilities are not trivially small or flat: the comparison means something.
    expect(out.top[0]!.probability).toBeGreaterThan(0.3);
    console.log(JSON.stringify({ test: 'predict-image', torch32, tolerance, top: out.top }));

    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-img-'));
    const broken = path.join(dir, 'broken.jpg');
    writeFileSync(broken, 'not an image');
    const bad = await ferry([
      'predict',
      '--model',
      'resnet18',
      '--weights',
      ref('resnet18.pth'),
      '--image',
      broken,
      '--backend',
      'wasm',
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('FERRY_ERR_IMAGE_UNREADABLE');
    expect(bad.stderr).toContain('broken.jpg');
  });
});

describe('ferry weights pull (against a local HTTP server)', () => {
  let server: Server;
  let base = '';
  let body: Buffer;
  let sha = '';
  /** When set, the next full response stops after this many bytes (a dropped connection). */
  let cutAfter: number | undefined;
  const requests: { range: string | undefined }[] = [];

  beforeAll(async () => {
    body = readFileSync(ref('mobilenet_v2.pth'));
    sha = createHash('sha256').update(body).digest('hex');
    server = createServer((req, res) => {
      requests.push({ range: req.headers.range });
      const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      const start = m ? Number(m[1]) : 0;
      const slice = body.subarray(start);
      res.writeHead(m ? 206 : 200, {
        'content-length': String(slice.length),
        ...(m ? { 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` } : {}),
      });
      if (cutAfter !== undefined) {
        const n = cutAfter;
        cutAfter = undefined;
        res.write(slice.subarray(0, n), () => res.destroy());
        return;
      }
      res.end(slice);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const addr = server.address();
    base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  });

  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  test('an interrupted download resumes with a Range request, is verified, then comes from the cache', async () => {
    const cache = mkdtempSync(path.join(tmpdir(), 'ferry-cache-'));
    const args = [
      'weights',
      'pull',
      'mobilenet_v2',
      '--cache',
      cache,
      '--url',
      `${base}/mobilenet_v2.pth`,
      '--sha256',
      sha,
    ];
    cutAfter = 5_000_000;
    const first = await ferry(args);
    expect(first.code).toBe(2);
    expect(first.stderr).toContain('run again to resume');
    const part = path.join(cache, 'weights', 'mobilenet_v2.pth.part');
    const partial = statSync(part).size;
    expect(partial).toBeGreaterThan(0);
    expect(partial).toBeLessThan(body.length);

    const second = await ferry(args);
    expect(second.code).toBe(0);
    expect(second.stderr).toContain('resumed');
    expect(requests.at(-1)?.range).toBe(`bytes=${partial}-`);
    const file = second.stdout.trim();
    expect(createHash('sha256').update(readFileSync(file)).digest('hex')).toBe(sha);
    expect(existsSync(part)).toBe(false);

    const n = requests.length;
    const third = await ferry(args);
    expect(third.code).toBe(0);
    expect(third.stderr).toContain('cached');
    expect(requests.length).toBe(n);
  });

  test('a checksum mismatch fails and leaves no file behind', async () => {
    const cache = mkdtempSync(path.join(tmpdir(), 'ferry-cache-'));
    const r = await ferry([
      'weights',
      'pull',
      'mobilenet_v2',
      '--cache',
      cache,
      '--url',
      `${base}/m.pth`,
      '--sha256',
      '0'.repeat(64),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('checksum mismatch');
    expect(r.stderr).toContain('FERRY_ERR_DOWNLOAD');
    expect(existsSync(path.join(cache, 'weights', 'm.pth'))).toBe(false);
    expect(existsSync(path.join(cache, 'weights', 'm.pth.part'))).toBe(false);
  });

  test("a hash prefix (torch hub's file-name rule, used for official sources) is enforced", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'ferry-dl-'));
    const ok = await download({ url: `${base}/a.pth`, dest: path.join(dir, 'a.pth'), sha256Prefix: sha.slice(0, 8) });
    expect(ok.how).toBe('downloaded');
    const wrong = sha.startsWith('0') ? 'f' : '0';
    await expect(
      download({ url: `${base}/b.pth`, dest: path.join(dir, 'b.pth'), sha256Prefix: `${wrong}${sha.slice(1, 8)}` }),
    ).rejects.toThrow(/checksum mismatch/);
  });

  test('a model without official weights needs --url and --sha256', async () => {
    const r = await ferry(['weights', 'pull', 'resnet_tiny']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('has no official weights');
  });
});
