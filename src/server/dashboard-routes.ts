/**
 * The dashboard: static files served as they are on disk (no build step), and uPlot's browser
 * build served from the installed `uplot` package.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';

import { ApiError } from './api-error.js';
import { dashboardDir, uplotFiles } from './locations.js';

/** URL path to file and content type. */
interface StaticFile {
  path: string;
  contentType: string;
}

/**
 * The page may load scripts and styles from this server only; uPlot sets element styles from
 * script, which `style-src 'unsafe-inline'` allows.
 */
const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Registers the routes of the dashboard page and its assets. */
export function registerDashboardRoutes(app: FastifyInstance): void {
  const dashboard = dashboardDir();
  const uplot = uplotFiles();
  const files: Record<string, StaticFile> = {
    '/': { path: join(dashboard, 'index.html'), contentType: 'text/html; charset=utf-8' },
    '/dashboard/dashboard.js': { path: join(dashboard, 'dashboard.js'), contentType: 'text/javascript; charset=utf-8' },
    '/dashboard/dashboard.css': { path: join(dashboard, 'dashboard.css'), contentType: 'text/css; charset=utf-8' },
    '/vendor/uPlot.iife.min.js': { path: uplot.script, contentType: 'text/javascript; charset=utf-8' },
    '/vendor/uPlot.min.css': { path: uplot.stylesheet, contentType: 'text/css; charset=utf-8' },
  };

  const cache = new Map<string, Buffer>();
  for (const [url, file] of Object.entries(files)) {
    app.get(url, async (_request, reply) => {
      let content = cache.get(url);
      if (content === undefined) {
        content = await readStatic(file.path);
        cache.set(url, content);
      }
      return send(reply, file, content);
    });
  }
}

function send(reply: FastifyReply, file: StaticFile, content: Buffer): Buffer {
  reply
    .type(file.contentType)
    .header('content-security-policy', CONTENT_SECURITY_POLICY)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('cache-control', 'no-cache');
  return content;
}

async function readStatic(path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    throw new ApiError(
      500,
      'DASHBOARD_FILE_MISSING',
      `The dashboard file ${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)}). ` +
        'Reinstall the package, or run `npm run build`, which copies the dashboard next to the server bundle.',
    );
  }
}
