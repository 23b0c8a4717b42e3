import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { REPO_ROOT } from './helpers/torch-ref.js';

/** Deployment files, validated without a Docker engine or a cluster. */
const deploy = (...p: string[]): string => path.join(REPO_ROOT, 'deploy', ...p);

describe('docker compose', () => {
  test('deploy/compose.yaml passes `docker-compose config` (Debian docker-compose) with the expected services', () => {
    const out = execFileSync('docker-compose', ['-f', deploy('compose.yaml'), 'config'], {
      env: { ...process.env, FERRY_TOKEN: 't', NATS_PASSWORD: 'p', DASHBOARD_TOKEN: 'd' },
      encoding: 'utf8',
    });
    const c = parse(out) as { services: Record<string, Record<string, unknown>>; volumes: Record<string, unknown> };
    expect(Object.keys(c.services).sort()).toEqual(['coordinator', 'dashboard', 'nats', 'worker-gpu0', 'worker-gpu1']);
    expect(c.services['nats']!['command']).toEqual(expect.arrayContaining(['-js', '--user', 'ferry']));
    for (const w of ['worker-gpu0', 'worker-gpu1']) {
      const dev = (
        c.services[w] as {
          deploy: {
            resources: {
              reservations: { devices: { driver: string; capabilities: string[]; device_ids: string[] }[] };
            };
          };
        }
      ).deploy.resources.reservations.devices[0]!;
      expect(dev).toMatchObject({ driver: 'nvidia', capabilities: ['gpu'] });
      expect(dev.device_ids).toEqual([w.endsWith('0') ? '0' : '1']);
    }
    expect(Object.keys(c.volumes)).toEqual(expect.arrayContaining(['coordinator-state', 'nats-data']));
    // Off loopback the coordinator runs with TLS and a token (from the environment).
    expect(c.services['coordinator']!['command']).toEqual(expect.arrayContaining(['--tls-cert', '--tls-key']));
    expect((c.services['coordinator']!['environment'] as Record<string, string>)['FERRY_TOKEN']).toBe('t');
  });

  test('compose refuses to start without the secrets it needs', () => {
    let stderr = '';
    try {
      execFileSync('docker-compose', ['-f', deploy('compose.yaml'), 'config'], {
        env: { PATH: process.env['PATH'] ?? '' },
        stdio: 'pipe',
      });
    } catch (e) {
      stderr = String((e as { stderr?: Buffer }).stderr ?? '');
    }
    expect(stderr).toMatch(/Missing mandatory value .*: set (NATS_PASSWORD|FERRY_TOKEN|DASHBOARD_TOKEN)/);
  });
});

describe('Kubernetes manifests', () => {
  const docs = readdirSync(deploy('k8s'))
    .filter((f) => f.endsWith('.yaml'))
    .flatMap((f) =>
      parseAllDocuments(readFileSync(deploy('k8s', f), 'utf8')).map((d) => ({
        file: f,
        obj: d.toJS() as { apiVersion: string; kind: string; metadata: { name: string } },
      })),
    );

  test('every manifest validates against the Kubernetes API schema (kubernetes-models)', async () => {
    for (const { file, obj } of docs) {
      const [group, version] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/') : ['', obj.apiVersion];
      const mod = (await import(`kubernetes-models/${group ? `${group}/` : ''}${version}/${obj.kind}`)) as Record<
        string,
        new (o: unknown) => { validate(): void }
      >;
      const Model = mod[obj.kind]!;
      expect(() => new Model(obj).validate(), `${file}: ${obj.kind} ${obj.metadata.name}`).not.toThrow();
    }
    const kinds = docs.map((d) => `${d.obj.kind}/${d.obj.metadata.name}`);
    expect(kinds).toEqual(
      expect.arrayContaining([
        'StatefulSet/nats',
        'Deployment/coordinator',
        'PersistentVolumeClaim/coordinator-state',
        'Service/coordinator',
        'Deployment/dashboard',
        'Service/dashboard',
        'StatefulSet/worker',
        'Secret/ferry-auth',
        'Secret/ferry-tls',
      ]),
    );
  });

  test('a manifest with a wrong field is rejected (the validation has teeth)', async () => {
    const { Deployment } = await import('kubernetes-models/apps/v1/Deployment');
    expect(() =>
      new Deployment({
        metadata: { name: 'x' },
        spec: { replicas: 'two', selector: {}, template: {} },
      } as never).validate(),
    ).toThrow();
  });

  test('workers get one GPU each and read datasets from a volume; the coordinator keeps its state on a claim', () => {
    const worker = docs.find((d) => d.obj.kind === 'StatefulSet' && d.obj.metadata.name === 'worker')!
      .obj as unknown as {
      spec: {
        template: {
          spec: {
            containers: { resources: { limits: Record<string, number> }; volumeMounts: { mountPath: string }[] }[];
          };
        };
      };
    };
    const c = worker.spec.template.spec.containers[0]!;
    expect(c.resources.limits['nvidia.com/gpu']).toBe(1);
    expect(c.volumeMounts.map((m) => m.mountPath)).toContain('/data');
    const coord = docs.find((d) => d.obj.kind === 'Deployment' && d.obj.metadata.name === 'coordinator')!
      .obj as unknown as { spec: { strategy: { type: string } } };
    expect(coord.spec.strategy.type).toBe('Recreate');
  });
});

describe('Dockerfiles', () => {
  test.each(['Dockerfile.coordinator', 'Dockerfile.worker-cuda', 'Dockerfile.worker-webgpu'])(
    '%s: npm ci from the repo, non-root user, health check',
    (f) => {
      const text = readFileSync(deploy('docker', f), 'utf8');
      expect(text).toMatch(/RUN npm ci /);
      expect(text).toMatch(/^USER ferry$/m);
      expect(text).toMatch(/^HEALTHCHECK /m);
      if (f.includes('cuda')) expect(text).toMatch(/FROM nvidia\/cuda:11\.2\.\d+-cudnn8/);
      if (f.includes('webgpu')) expect(text).toMatch(/libvulkan1/);
    },
  );
});
