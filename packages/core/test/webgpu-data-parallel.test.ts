// The data-parallel equivalences on WebGPU (lavapipe without a GPU; see webgpu.test.ts).
import { dataParallelSuite } from './data-parallel.suite.js';

dataParallelSuite('webgpu');
