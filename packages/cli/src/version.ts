import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** ferry's version, from the CLI package's manifest. */
export const FERRY_VERSION: string = (require('../package.json') as { version: string }).version;
