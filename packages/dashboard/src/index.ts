/** @ferry/dashboard: `buildApp(options)` (fastify) and the dashboard process (`startDashboard`). */
export { ChangeFeed, buildApp, type DashboardAppOptions } from './app.js';
export { chartAssets } from './assets.js';
export { startDashboard, type DashboardOptions, type EventFeed } from './server.js';
export {
  DashboardState,
  downsample,
  type CellView,
  type EpochPoint,
  type SweepView,
  type WorkerView,
} from './state.js';
export { cellSummary, type CellDetail, type CellSummary, type SweepDetail, type SweepListItem } from './api.js';
