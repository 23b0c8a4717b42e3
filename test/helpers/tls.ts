import { execFileSync } from 'node:child_process';
import path from 'node:path';

/**
 * A self-signed certificate and its key in `dir` (openssl, one day), valid for `altNames`
 * (`DNS:localhost`, `IP:127.0.0.1`, ...): the server certificate and, as its own CA, the client's.
 */
export function selfSignedCert(dir: string, cn: string, altNames: readonly string[]): { key: string; cert: string } {
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1'],
      ...['-subj', `/CN=${cn}`, '-addext', `subjectAltName=${altNames.join(',')}`],
    ],
    { stdio: 'ignore' },
  );
  return { key, cert };
}
