/**
 * `nested-learning serve`: the HTTP API and the dashboard, from `nested-learning/server`.
 */
import { Command } from 'commander';

import { ArgumentError } from '../../index.js';
import { DEFAULT_HOST, DEFAULT_PORT, startServer } from '../../server/index.js';
import type { Terminal } from '../terminal.js';

interface ServeFlags {
  host: string;
  port: string;
  outputDir?: string;
  token?: string;
  allowRemote?: boolean;
  modelRoot?: string[];
  dataRoot?: string[];
  quiet?: boolean;
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** Builds the `serve` command. */
export function serveCommand(terminal: () => Terminal): Command {
  return new Command('serve')
    .summary('start the HTTP API and the dashboard')
    .description(
      'Start the HTTP API and the training dashboard. It listens on 127.0.0.1 unless --host names another address, which also ' +
        'needs --allow-remote and --token. Ctrl-C stops an active run (waiting for its final checkpoint) and closes the server.',
    )
    .option('--host <address>', 'address to listen on', DEFAULT_HOST)
    .option('--port <number>', 'TCP port; 0 takes a free port', String(DEFAULT_PORT))
    .option('--output-dir <folder>', 'folder of the experiment folders (default: ./nested_learning/checkpoints)')
    .option('--token <token>', 'bearer token that every API request must send')
    .option('--allow-remote', 'accept requests for non-loopback host names; needs --token')
    .option('--model-root <folder>', 'folder that base model and adapter paths must lie under; repeat for several', collect)
    .option('--data-root <folder>', 'folder that data paths must lie under; repeat for several', collect)
    .option('--quiet', 'do not log requests')
    .action(async (flags: ServeFlags) => {
      const port = Number(flags.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        throw new ArgumentError('CLI_INVALID_FLAG', `Invalid --port ${JSON.stringify(flags.port)}. Expected an integer from 0 to 65535.`, {
          details: { flag: '--port', value: flags.port },
        });
      }
      const server = await startServer({
        host: flags.host,
        port,
        ...(flags.outputDir === undefined ? {} : { outputDir: flags.outputDir }),
        ...(flags.token === undefined ? {} : { token: flags.token }),
        allowRemote: flags.allowRemote === true,
        roots: {
          ...(flags.modelRoot === undefined ? {} : { model: flags.modelRoot }),
          ...(flags.dataRoot === undefined ? {} : { data: flags.dataRoot }),
        },
        logger: flags.quiet !== true,
      });
      terminal().out.write(`Dashboard and API at ${server.url}/ (Ctrl-C to stop)\n`);

      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          terminal().out.write('Stopping the server...\n');
          server
            .close()
            .catch((error: unknown) => terminal().err.write(`Closing the server failed: ${(error as Error).message}\n`))
            .finally(resolve);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
    });
}
