export { FERRY_VERSION } from '@ferry/common';
