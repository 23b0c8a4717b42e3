import { dataParallelSuite } from './data-parallel.suite.js';

dataParallelSuite('torch');
