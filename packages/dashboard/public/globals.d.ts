/* eslint-disable @typescript-eslint/consistent-type-imports -- a global declaration file: an import statement would make it a module */
// The browser modules' one global, uPlot (its IIFE build, loaded first), and the types of the data
// the dashboard's API answers (from the server's own code), for the JSDoc of app.js and chart.js.
declare const uPlot: typeof import('uplot');

type Chart = { plot: import('uplot'); update: (spec: import('./chart.js').ChartSpec) => void };

/** app.js's charts by box id, for the browser's console. */
interface Window {
  ferry?: { charts: Map<string, { chart: Chart; key: string }> };
}
type SweepListItem = import('../src/api.js').SweepListItem;
type SweepDetail = import('../src/api.js').SweepDetail;
type CellSummary = import('../src/api.js').CellSummary;
type CellDetail = import('../src/api.js').CellDetail;
type ResultsTable = import('@ferry/common').ResultsTable;
