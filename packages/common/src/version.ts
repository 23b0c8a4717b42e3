/**
 * ferry's version, the one every process reports (`ferry --version`, a worker's registration, the
 * coordinator's worker list). A constant, so that @ferry/common stays free of I/O: it is the
 * version of every package.json in the repository, which packages/common/test/version.test.ts
 * checks (a release bumps them and this together).
 */
export const FERRY_VERSION = '0.1.0';
