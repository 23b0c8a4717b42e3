import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** A file of the browser code (public/), from src/ or dist/ alike. */
export function publicFile(name: string): string {
  return fileURLToPath(new URL(`../public/${name}`, import.meta.url));
}

/** uPlot's files, from its npm package. */
export const UPLOT_FILES = {
  js: require.resolve('uplot/dist/uPlot.iife.min.js'),
  css: require.resolve('uplot/dist/uPlot.min.css'),
} as const;

/**
 * The chart code as text, to inline in a self-contained page (results.html): uPlot's CSS and its
 * script (a classic one: its global), and the dashboard's chart module (public/chart.js, an ES
 * module: `FerryChart.plot`, `FerryChart.plotAll`, ...), to inline as a module script.
 */
export function chartAssets(): { readonly css: string; readonly uplot: string; readonly chart: string } {
  return {
    css: readFileSync(UPLOT_FILES.css, 'utf8'),
    uplot: readFileSync(UPLOT_FILES.js, 'utf8'),
    chart: readFileSync(publicFile('chart.js'), 'utf8'),
  };
}
