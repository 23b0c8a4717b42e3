/* eslint-disable @typescript-eslint/consistent-type-imports -- a global script: an import statement would make it a module */
// The browser code's globals: uPlot (its IIFE build, loaded first) and the types of the data the
// dashboard's API answers (from the server's own code), for the JSDoc of app.js and chart.js.
declare const uPlot: typeof import('uplot');

type Chart = { plot: import('uplot'); update: (spec: ChartSpec) => void };
type SweepListItem = import('../src/api.js').SweepListItem;
type SweepDetail = import('../src/api.js').SweepDetail;
type CellSummary = import('../src/api.js').CellSummary;
type CellDetail = import('../src/api.js').CellDetail;
type ResultsTable = import('@ferry/common').ResultsTable;
