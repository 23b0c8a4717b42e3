import { expect, test } from 'vitest';
import { isLoopbackHost } from '@ferry/common';

test('loopback is parsed, not matched by prefix: 127.evil.example is a host name that can resolve anywhere', () => {
  for (const h of [
    'localhost',
    '127.0.0.1',
    '127.1.2.3',
    '::1',
    '[::1]',
    '0:0:0:0:0:0:0:1',
    '::ffff:127.0.0.1',
    'LOCALHOST',
  ])
    expect(isLoopbackHost(h), h).toBe(true);
  for (const h of [
    '127.evil.example',
    '127.0.0.1.nip.io',
    '0.0.0.0',
    '::',
    '10.0.0.1',
    '128.0.0.1',
    '127.0.0.256',
    '::2',
    'example.com',
    '',
    '1.127.0.0',
  ]) {
    expect(isLoopbackHost(h), h).toBe(false);
  }
});
