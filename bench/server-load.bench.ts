/**
 * Load test of the HTTP server during a training run. Concurrent clients send status and metrics
 * requests to 127.0.0.1 for a fixed window. The training step time in that window is compared
 * with a window of the same length without clients.
 *
 * Each round trains the embedded tiny model (`examples/models/tiny-qwen2`, fiction training data)
 * through the API on the wasm backend, without evaluations or checkpoints so every step does the
 * same work. A round waits for the first steps (warm-up), measures one window, and stops the run
 * through the API. Rounds alternate between "no clients" and "clients", so a change in load from
 * other processes affects both alike.
 *
 * The clients run in a separate process, as real clients would, so the CPU time of the server
 * process is measured apart from theirs. Each client sends `GET /nested-learning/status`, then
 * `GET /nested-learning/metrics?since=<last step seen>`, and repeats. It repeats at once (a closed
 * loop, the most load the clients can make) or `--interval-ms` after the previous pair started
 * (the polling of a dashboard). `--client-nice` lowers the client process's scheduling priority, so
 * that on a machine with few cores the load generator takes less CPU time from the training than
 * the server does. A request counts as an error when it fails or returns a status other than 200.
 *
 * Run: npx tsx bench/server-load.bench.ts [--clients 20] [--seconds 30] [--rounds 2] [--interval-ms 0]
 *      [--client-nice 0] [--model DIR]
 */
import { fork } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, setPriority, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

// The server module is imported in main() only, so the client process starts without loading it.
import type { RunSnapshot, StartedServer } from '../src/server/index.js';

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string', default: '20' },
    seconds: { type: 'string', default: '30' },
    rounds: { type: 'string', default: '2' },
    warmup: { type: 'string', default: '5' },
    'interval-ms': { type: 'string', default: '0' },
    'client-nice': { type: 'string', default: '0' },
    // Internal: makes this process the client process, started by the benchmark itself.
    'client-process': { type: 'boolean', default: false },
    model: { type: 'string', default: join(repositoryRoot, 'examples', 'models', 'tiny-qwen2') },
  },
});
const CLIENTS = Number(args.clients);
const WINDOW_SECONDS = Number(args.seconds);
const ROUNDS = Number(args.rounds);
const WARMUP_STEPS = Number(args.warmup);
const INTERVAL_MS = Number(args['interval-ms']);
const CLIENT_NICE = Number(args['client-nice']);
const MODEL_DIR = args.model as string;

/** Settings of every training run: long enough that the window always ends first. */
const RUN_CONFIG = {
  baseModelPath: MODEL_DIR,
  trainDataPath: join(repositoryRoot, 'examples', 'data', 'fiction', 'train.jsonl'),
  numSteps: 100_000,
  batchSize: 4,
  maxSeqLength: 128,
  learningRate: 1e-4,
  evalEvery: 0,
  checkpointEvery: 0,
  backend: 'wasm',
};

interface TrainRecord {
  step: number;
  stepTime: number;
  timestamp: string;
}

interface WindowResult {
  steps: number;
  meanStepTime: number;
  medianStepTime: number;
  requests: number;
  errors: number;
  latenciesMs: number[];
  loadAverage: number;
  /** CPU time of the server process (this one) and of the client process during the window, in seconds. */
  serverCpuSeconds: number;
  clientCpuSeconds: number;
}

/** Report of the client process. */
interface ClientReport {
  requests: number;
  errors: number;
  latenciesMs: number[];
  cpuSeconds: number;
}

async function main(): Promise<void> {
  const workDir = await mkdtemp(join(tmpdir(), 'nl-server-load-'));
  const { startServer } = await import('../src/server/index.js');
  const server = await startServer({
    port: 0,
    // Request lines are logged at level info. Level warn keeps the benchmark's output readable.
    logger: { level: 'warn' },
    roots: { model: dirname(MODEL_DIR) },
    outputDir: workDir,
  });

  const results: { withClients: boolean; result: WindowResult }[] = [];
  try {
    for (let round = 0; round < ROUNDS; round += 1) {
      for (const withClients of [false, true]) {
        const result = await measureWindow(server, withClients, `round-${round}-${withClients ? 'clients' : 'quiet'}`);
        results.push({ withClients, result });
        printWindow(round, withClients, result);
      }
    }
  } finally {
    await server.close();
    await rm(workDir, { recursive: true, force: true });
  }

  printSummary(results);
}

/** Starts a run, waits for the warm-up steps, measures one window (with or without clients) and stops the run. */
async function measureWindow(server: StartedServer, withClients: boolean, experimentName: string): Promise<WindowResult> {
  const start = await fetch(`${server.url}/nested-learning/start`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...RUN_CONFIG, experimentName }),
  });
  if (start.status !== 202) {
    throw new Error(`Start failed with ${start.status}: ${await start.text()}`);
  }
  // The client process starts (and loads) before the window, so the window measures requests only.
  const clients = withClients ? await startClientProcess() : undefined;
  await waitForStep(server, WARMUP_STEPS);

  const windowStart = Date.now();
  const windowEnd = windowStart + WINDOW_SECONDS * 1000;
  const cpuStart = process.cpuUsage();
  const loadAverageStart = loadavg()[0] as number;
  const idle: ClientReport = { requests: 0, errors: 0, latenciesMs: [], cpuSeconds: 0 };
  const clientResult = clients === undefined ? await sleepUntil(windowEnd).then(() => idle) : await clients(server.url, windowEnd);
  const loadAverage = ((loadavg()[0] as number) + loadAverageStart) / 2;
  const cpu = process.cpuUsage(cpuStart);

  const stop = await fetch(`${server.url}/nested-learning/stop`, { method: 'POST' });
  if (stop.status !== 200) {
    throw new Error(`Stop failed with ${stop.status}: ${await stop.text()}`);
  }

  // Steps that ended inside the window.
  const records = (await readAllTrainRecords(server.url)).filter((record) => {
    const time = Date.parse(record.timestamp);
    return time >= windowStart && time <= windowEnd;
  });
  const stepTimes = records.map((record) => record.stepTime).sort((a, b) => a - b);
  return {
    steps: stepTimes.length,
    meanStepTime: stepTimes.reduce((sum, value) => sum + value, 0) / stepTimes.length,
    medianStepTime: median(stepTimes),
    requests: clientResult.requests,
    errors: clientResult.errors,
    latenciesMs: clientResult.latenciesMs,
    loadAverage,
    serverCpuSeconds: (cpu.user + cpu.system) / 1e6,
    clientCpuSeconds: clientResult.cpuSeconds,
  };
}

/** Runs the clients of one window until a deadline and returns their report. */
type ClientProcess = (baseUrl: string, deadline: number) => Promise<ClientReport>;

/** Starts the client process and waits until it is ready to send requests. */
async function startClientProcess(): Promise<ClientProcess> {
  const child = fork(fileURLToPath(import.meta.url), ['--client-process', '--clients', String(CLIENTS), '--interval-ms', String(INTERVAL_MS)], {
    execArgv: process.execArgv,
  });
  if (CLIENT_NICE !== 0) {
    setPriority(child.pid as number, CLIENT_NICE);
  }
  const exited = new Promise<never>((_, reject) => {
    child.once('exit', (code) => reject(new Error(`The client process exited with code ${code} before its report.`)));
  });
  await Promise.race([new Promise((resolve) => child.once('message', resolve)), exited]);

  return (baseUrl, deadline) => {
    child.send({ baseUrl, deadline });
    return Promise.race([new Promise<ClientReport>((resolve) => child.once('message', (report: ClientReport) => resolve(report))), exited]);
  };
}

/** Entry point of the client process: reports ready, runs the clients of one window, sends the report and exits. */
function clientMain(): void {
  process.once('message', ({ baseUrl, deadline }: { baseUrl: string; deadline: number }) => {
    void (async () => {
      const cpuStart = process.cpuUsage();
      const result = await runClients(baseUrl, deadline);
      const cpu = process.cpuUsage(cpuStart);
      const report: ClientReport = { ...result, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
      process.send?.(report, undefined, undefined, () => process.exit(0));
    })();
  });
  process.send?.('ready');
}

/** Runs the clients until `deadline` and returns their counts. */
async function runClients(baseUrl: string, deadline: number): Promise<{ requests: number; errors: number; latenciesMs: number[] }> {
  let requests = 0;
  let errors = 0;
  const latenciesMs: number[] = [];

  const request = async (url: string): Promise<unknown> => {
    const started = performance.now();
    requests += 1;
    try {
      const response = await fetch(url);
      const body: unknown = await response.json();
      latenciesMs.push(performance.now() - started);
      if (response.status !== 200) {
        errors += 1;
        return undefined;
      }
      return body;
    } catch {
      errors += 1;
      return undefined;
    }
  };

  const client = async (): Promise<void> => {
    let lastStep = 0;
    while (Date.now() < deadline) {
      const pairStarted = Date.now();
      const status = (await request(`${baseUrl}/nested-learning/status`)) as RunSnapshot | undefined;
      await request(`${baseUrl}/nested-learning/metrics?since=${lastStep}&limit=1000`);
      lastStep = status?.currentStep ?? lastStep;
      if (INTERVAL_MS > 0) {
        await sleepUntil(Math.min(deadline, pairStarted + INTERVAL_MS));
      }
    }
  };

  await Promise.all(Array.from({ length: CLIENTS }, client));
  return { requests, errors, latenciesMs };
}

async function readAllTrainRecords(baseUrl: string): Promise<TrainRecord[]> {
  const records: TrainRecord[] = [];
  let offset = 0;
  for (;;) {
    const page = (await (await fetch(`${baseUrl}/nested-learning/metrics?offset=${offset}&limit=10000`)).json()) as {
      train: { records: TrainRecord[]; nextOffset: number | null };
    };
    records.push(...page.train.records);
    if (page.train.nextOffset === null) {
      return records;
    }
    offset = page.train.nextOffset;
  }
}

async function waitForStep(server: StartedServer, step: number): Promise<void> {
  for (;;) {
    const snapshot = (await (await fetch(`${server.url}/nested-learning/status`)).json()) as RunSnapshot;
    if (snapshot.status === 'error') {
      throw new Error(`The run failed: ${snapshot.error?.message}`);
    }
    if (snapshot.currentStep >= step) {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function sleepUntil(deadline: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, deadline - Date.now())));
}

function median(sorted: readonly number[]): number {
  if (sorted.length === 0) {
    return Number.NaN;
  }
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

function percentile(values: readonly number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] ?? Number.NaN;
}

function printWindow(round: number, withClients: boolean, result: WindowResult): void {
  const clients = withClients ? `${CLIENTS} clients` : 'no clients';
  const rate = result.requests / WINDOW_SECONDS;
  const latency = withClients
    ? `, ${rate.toFixed(0)} requests/s, ${result.errors} errors, latency p50 ${percentile(result.latenciesMs, 0.5).toFixed(1)} ms, ` +
      `p99 ${percentile(result.latenciesMs, 0.99).toFixed(1)} ms, CPU server ${result.serverCpuSeconds.toFixed(1)} s, ` +
      `clients ${result.clientCpuSeconds.toFixed(1)} s`
    : '';
  console.log(
    `round ${round + 1}, ${clients}: ${result.steps} steps, step time mean ${(result.meanStepTime * 1000).toFixed(1)} ms, ` +
      `median ${(result.medianStepTime * 1000).toFixed(1)} ms${latency}, load average ${result.loadAverage.toFixed(2)}`,
  );
}

function printSummary(results: readonly { withClients: boolean; result: WindowResult }[]): void {
  const quiet = results.filter((entry) => !entry.withClients).map((entry) => entry.result);
  const loaded = results.filter((entry) => entry.withClients).map((entry) => entry.result);
  const meanOf = (list: WindowResult[], pick: (result: WindowResult) => number): number =>
    list.reduce((sum, result) => sum + pick(result), 0) / list.length;

  const quietStep = meanOf(quiet, (result) => result.meanStepTime);
  const loadedStep = meanOf(loaded, (result) => result.meanStepTime);
  const requests = loaded.reduce((sum, result) => sum + result.requests, 0);
  const errors = loaded.reduce((sum, result) => sum + result.errors, 0);
  const latencies = loaded.flatMap((result) => result.latenciesMs);

  console.log('');
  console.log(`machine: ${cpus().length} logical CPUs, ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`);
  const pacing = INTERVAL_MS > 0 ? `one status + metrics pair every ${INTERVAL_MS} ms per client` : 'closed loop';
  console.log(`clients: ${CLIENTS} (${pacing}), window: ${WINDOW_SECONDS} s, rounds: ${ROUNDS}`);
  console.log(`request rate: ${(requests / (WINDOW_SECONDS * loaded.length)).toFixed(0)} requests/s (mean over rounds)`);
  console.log(`errors: ${errors} of ${requests} requests`);
  console.log(`latency: p50 ${percentile(latencies, 0.5).toFixed(1)} ms, p99 ${percentile(latencies, 0.99).toFixed(1)} ms`);
  console.log(`step time: ${(quietStep * 1000).toFixed(1)} ms without clients, ${(loadedStep * 1000).toFixed(1)} ms with clients`);
  console.log(`training slowdown: ${((loadedStep / quietStep - 1) * 100).toFixed(1)}% (target: under 5%)`);
  const serverCpu = loaded.reduce((sum, result) => sum + result.serverCpuSeconds, 0);
  const clientCpu = loaded.reduce((sum, result) => sum + result.clientCpuSeconds, 0);
  console.log(
    `CPU time per request: server ${((serverCpu / requests) * 1000).toFixed(3)} ms, clients ${((clientCpu / requests) * 1000).toFixed(3)} ms ` +
      `(client process nice ${CLIENT_NICE})`,
  );
}

if (args['client-process'] === true) {
  clientMain();
} else {
  await main();
}
