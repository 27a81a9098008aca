// Dashboard of the nested-learning server: a form that starts a run, live charts of its metrics
// (drawn with uPlot, loaded as the global `uPlot`), and the list of experiment folders.
// Plain browser JavaScript, served as is, so the page needs no build step.
'use strict';

(function dashboard() {
  const API = '/nested-learning';

  // A token in the address fragment (`/#token=...`) is sent as a bearer token. Browsers never send
  // the fragment to the server, so the token stays out of request lines and logs.
  const token = new URLSearchParams(location.hash.slice(1)).get('token');

  const state = {
    schema: null,
    tierInfo: null,
    status: null,
    runKey: null,
    // Records of the run on the charts, by step.
    train: new Map(),
    evals: new Map(),
    numTiers: 3,
    chartsDirty: false,
  };

  const charts = {};

  // ---------------------------------------------------------------------------------------------
  // HTTP

  async function api(path, options = {}) {
    const headers = Object.assign({}, options.headers);
    if (token) {
      headers.authorization = `Bearer ${token}`;
    }
    if (options.body !== undefined) {
      headers['content-type'] = 'application/json';
    }
    const response = await fetch(API + path, {
      method: options.method || 'GET',
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    const text = await response.text();
    const body = text === '' ? null : JSON.parse(text);
    if (!response.ok) {
      const error = new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
      error.status = response.status;
      error.issues = body && body.error ? body.error.issues || [] : [];
      throw error;
    }
    return body;
  }

  // Metrics numbers arrive as JSON numbers, or as "NaN"/"Infinity"/"-Infinity" strings.
  function metric(value) {
    if (typeof value === 'number') {
      return value;
    }
    if (value === 'NaN' || value === 'Infinity' || value === '-Infinity') {
      return Number(value);
    }
    return null;
  }

  function finiteOrNull(value) {
    const number = metric(value);
    return number !== null && Number.isFinite(number) ? number : null;
  }

  function formatNumber(value, digits = 4) {
    const number = metric(value);
    if (number === null) {
      return '-';
    }
    return Number.isFinite(number) ? number.toFixed(digits) : String(number);
  }

  // ---------------------------------------------------------------------------------------------
  // Form

  function renderFields(config) {
    const properties = config.jsonSchema.properties;
    const infoByName = new Map(config.fields.map((field) => [field.name, field]));

    for (const container of document.querySelectorAll('.field[data-field]')) {
      const name = container.dataset.field;
      const property = properties[name] || {};
      const info = infoByName.get(name) || { description: '', type: '' };

      const label = document.createElement('label');
      const title = document.createElement('span');
      title.className = 'label';
      title.textContent = name;
      label.appendChild(title);

      const input = createInput(name, property);
      input.name = name;
      input.id = `field-${name}`;
      input.title = `${info.type}. ${info.description}`;
      if (property.default !== undefined && input.tagName === 'INPUT') {
        input.placeholder = Array.isArray(property.default) ? property.default.join(',') : String(property.default);
      }
      if (container.dataset.placeholder) {
        input.placeholder = container.dataset.placeholder;
      }
      label.appendChild(input);

      const help = document.createElement('small');
      help.className = 'help';
      help.textContent = info.description;
      label.appendChild(help);

      const problem = document.createElement('small');
      problem.className = 'problem';
      problem.id = `problem-${name}`;
      label.appendChild(problem);

      container.appendChild(label);
    }

    for (const [name, value] of Object.entries(config.defaults)) {
      setFieldValue(name, value);
    }
  }

  function createInput(name, property) {
    if (Array.isArray(property.enum)) {
      const select = document.createElement('select');
      for (const choice of property.enum) {
        const option = document.createElement('option');
        option.value = String(choice);
        option.textContent = String(choice);
        select.appendChild(option);
      }
      if (property.default !== undefined) {
        select.value = String(property.default);
      }
      return select;
    }
    const input = document.createElement('input');
    input.type = 'text';
    input.dataset.kind = inputKind(property);
    if (input.dataset.kind === 'number') {
      input.inputMode = 'decimal';
    }
    return input;
  }

  function inputKind(property) {
    if (property.type === 'array') {
      return 'list';
    }
    if (property.type === 'integer' || property.type === 'number') {
      return 'number';
    }
    if (Array.isArray(property.anyOf) && property.anyOf.every((part) => part.type === 'integer' || part.type === 'number')) {
      return 'number';
    }
    return 'text';
  }

  function fieldInput(name) {
    return document.getElementById(`field-${name}`);
  }

  function setFieldValue(name, value) {
    const input = fieldInput(name);
    if (!input) {
      return;
    }
    input.value = Array.isArray(value) ? value.join(',') : String(value);
  }

  // Numbers that do not parse are sent as written, so the server's validation names them.
  function parseValue(kind, raw) {
    const text = raw.trim();
    if (kind === 'number') {
      return text !== '' && Number.isFinite(Number(text)) ? Number(text) : text;
    }
    if (kind === 'list') {
      return text.split(',').map((part) => part.trim()).map((part) => (part !== '' && Number.isFinite(Number(part)) ? Number(part) : part));
    }
    return text;
  }

  function readConfig() {
    const config = {};
    for (const container of document.querySelectorAll('.field[data-field]')) {
      const name = container.dataset.field;
      const input = fieldInput(name);
      if (!input || input.value.trim() === '') {
        continue;
      }
      config[name] = input.tagName === 'SELECT' ? input.value : parseValue(input.dataset.kind, input.value);
    }
    return config;
  }

  function renderPresets(tierInfo) {
    const select = document.getElementById('preset');
    for (const preset of tierInfo.presets) {
      const option = document.createElement('option');
      option.value = preset.name;
      option.textContent = preset.name;
      select.appendChild(option);
    }
    select.addEventListener('change', () => applyPreset(select.value));
    for (const name of ['numTiers', 'tierUpdateFrequencies', 'tierAssignmentStrategy']) {
      fieldInput(name).addEventListener('input', () => {
        select.value = '';
        document.getElementById('preset-description').textContent = '';
      });
    }
    select.value = 'balanced';
    applyPreset('balanced');

    document.getElementById('clock-rule').textContent = tierInfo.clock.rule;
    document.getElementById('strategy-description').textContent = `tierAssignmentStrategy: ${tierInfo.strategies.description}`;
    document.getElementById('inactive-description').textContent = `inactiveGradients: ${tierInfo.inactiveGradients.description}`;
  }

  function applyPreset(name) {
    const preset = state.tierInfo.presets.find((candidate) => candidate.name === name);
    document.getElementById('preset-description').textContent = preset ? preset.description : '';
    if (!preset) {
      return;
    }
    for (const [field, value] of Object.entries(preset.options)) {
      setFieldValue(field, value);
    }
  }

  function showMessages(message, issues) {
    for (const element of document.querySelectorAll('.problem')) {
      element.textContent = '';
    }
    for (const element of document.querySelectorAll('.field.invalid')) {
      element.classList.remove('invalid');
    }

    const box = document.getElementById('messages');
    box.textContent = '';
    if (!message) {
      return;
    }
    const heading = document.createElement('p');
    heading.textContent = message;
    box.appendChild(heading);

    const list = document.createElement('ul');
    for (const issue of issues || []) {
      const item = document.createElement('li');
      item.textContent = `${issue.path}: ${issue.message}`;
      list.appendChild(item);

      const field = issue.field || String(issue.path).split(/[[.]/)[0];
      const problem = document.getElementById(`problem-${field}`);
      if (problem) {
        problem.textContent = issue.message;
        problem.closest('.field').classList.add('invalid');
      }
    }
    if (list.childElementCount > 0) {
      box.appendChild(list);
    }
  }

  async function startRun(event) {
    event.preventDefault();
    const button = document.getElementById('start');
    button.disabled = true;
    showMessages(null);
    try {
      const result = await api('/start', { method: 'POST', body: readConfig() });
      resetRun(result.status);
      updateStatus(result.status);
    } catch (error) {
      showMessages(error.message, error.issues);
      button.disabled = false;
    }
  }

  async function stopRun() {
    const button = document.getElementById('stop');
    button.disabled = true;
    button.textContent = 'Stopping...';
    try {
      const snapshot = await api('/stop', { method: 'POST' });
      updateStatus(snapshot);
    } catch (error) {
      showMessages(error.message, error.issues);
    } finally {
      button.textContent = 'Stop';
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Charts

  function chartWidth(element) {
    return Math.max(320, element.clientWidth || 640);
  }

  function createCharts() {
    const lossElement = document.getElementById('loss-chart');
    charts.loss = new uPlot(
      {
        width: chartWidth(lossElement),
        height: 220,
        scales: { x: { time: false } },
        series: [
          { label: 'step' },
          { label: 'train loss', stroke: '#1f77b4', width: 1.5 },
          { label: 'val loss', stroke: '#d62728', width: 2, spanGaps: true, points: { show: true, size: 6 } },
        ],
        axes: [{ label: 'step' }, { label: 'loss' }],
      },
      [[], [], []],
      lossElement,
    );

    const forgettingElement = document.getElementById('forgetting-chart');
    charts.forgetting = new uPlot(
      {
        width: chartWidth(forgettingElement),
        height: 180,
        scales: { x: { time: false } },
        series: [{ label: 'step' }, { label: 'forgetting', stroke: '#9467bd', width: 2, points: { show: true, size: 6 } }],
        axes: [{ label: 'step' }, { label: 'retain loss - baseline' }],
      },
      [[], []],
      forgettingElement,
    );

    createTimeline(state.numTiers);

    const resize = new ResizeObserver(() => {
      for (const [name, chart] of Object.entries(charts)) {
        const element = document.getElementById(`${name}-chart`);
        chart.setSize({ width: chartWidth(element), height: chart.height });
      }
    });
    for (const id of ['loss-chart', 'forgetting-chart', 'timeline-chart']) {
      resize.observe(document.getElementById(id));
    }
  }

  const TIER_COLORS = ['#2ca02c', '#ff7f0e', '#1f77b4', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

  function createTimeline(numTiers) {
    const element = document.getElementById('timeline-chart');
    if (charts.timeline) {
      charts.timeline.destroy();
    }
    const series = [{ label: 'step' }];
    for (let tier = 0; tier < numTiers; tier += 1) {
      series.push({
        label: `tier ${tier}`,
        stroke: TIER_COLORS[tier % TIER_COLORS.length],
        fill: TIER_COLORS[tier % TIER_COLORS.length],
        // Marks only: a line between steps would suggest activity in between.
        paths: () => null,
        points: { show: true, size: 7, fill: TIER_COLORS[tier % TIER_COLORS.length] },
      });
    }
    charts.timeline = new uPlot(
      {
        width: chartWidth(element),
        height: 70 + 28 * numTiers,
        scales: { x: { time: false }, y: { range: [-0.5, numTiers - 0.5] } },
        series,
        axes: [
          { label: 'step' },
          { label: 'tier', splits: () => Array.from({ length: numTiers }, (_, tier) => tier), values: (_, splits) => splits.map(String) },
        ],
      },
      Array.from({ length: numTiers + 1 }, () => []),
      element,
    );
    state.numTiers = numTiers;
  }

  function scheduleChartUpdate() {
    if (state.chartsDirty) {
      return;
    }
    state.chartsDirty = true;
    requestAnimationFrame(() => {
      state.chartsDirty = false;
      drawCharts();
    });
  }

  function drawCharts() {
    const steps = [...new Set([...state.train.keys(), ...state.evals.keys()])].sort((a, b) => a - b);
    const trainLoss = steps.map((step) => (state.train.has(step) ? finiteOrNull(state.train.get(step).loss) : null));
    const valLoss = steps.map((step) => (state.evals.has(step) ? finiteOrNull(state.evals.get(step).valLoss) : null));
    charts.loss.setData([steps, trainLoss, valLoss]);
    setPoints('loss-chart', trainLoss.filter((value) => value !== null).length);

    const evalSteps = [...state.evals.keys()].filter((step) => finiteOrNull(state.evals.get(step).forgetting) !== null).sort((a, b) => a - b);
    charts.forgetting.setData([evalSteps, evalSteps.map((step) => finiteOrNull(state.evals.get(step).forgetting))]);
    setPoints('forgetting-chart', evalSteps.length);

    const trainSteps = [...state.train.keys()].sort((a, b) => a - b);
    const numTiers = tierCount();
    if (numTiers !== state.numTiers) {
      createTimeline(numTiers);
    }
    const rows = [trainSteps];
    for (let tier = 0; tier < numTiers; tier += 1) {
      rows.push(trainSteps.map((step) => {
        const record = state.train.get(step);
        return !record.skipped && record.activeTiers.includes(tier) ? tier : null;
      }));
    }
    charts.timeline.setData(rows);
    setPoints('timeline-chart', trainSteps.length);
  }

  function tierCount() {
    const last = [...state.train.values()].pop();
    if (last && Array.isArray(last.tierStats) && last.tierStats.length > 0) {
      return last.tierStats.length;
    }
    return state.numTiers;
  }

  // The number of points drawn, for people reading the page source and for the browser test.
  function setPoints(id, count) {
    document.getElementById(id).dataset.points = String(count);
  }

  function addTrain(record) {
    state.train.set(record.step, record);
    scheduleChartUpdate();
  }

  function addEval(record) {
    state.evals.set(record.step, record);
    scheduleChartUpdate();
  }

  // ---------------------------------------------------------------------------------------------
  // Run status

  function runKeyOf(snapshot) {
    return snapshot && snapshot.experimentName ? `${snapshot.experimentName}@${snapshot.startedAt}` : null;
  }

  function resetRun(snapshot) {
    state.runKey = runKeyOf(snapshot);
    state.train.clear();
    state.evals.clear();
    scheduleChartUpdate();
  }

  function isActive(status) {
    return status === 'running' || status === 'stopping';
  }

  function updateStatus(snapshot) {
    const previous = state.status;
    state.status = snapshot;
    if (runKeyOf(snapshot) !== state.runKey) {
      resetRun(snapshot);
    }

    const badge = document.getElementById('status-badge');
    const phase = snapshot.status === 'running' && snapshot.phase === 'setup' ? ' (setting up)' : '';
    badge.textContent = snapshot.status + phase;
    badge.dataset.status = snapshot.status;

    document.getElementById('start').disabled = isActive(snapshot.status);
    document.getElementById('stop').disabled = snapshot.status !== 'running';

    document.getElementById('summary-experiment').textContent = snapshot.experimentName || '-';
    document.getElementById('summary-step').textContent =
      snapshot.totalSteps === null ? '-' : `${snapshot.currentStep} / ${snapshot.totalSteps}`;
    updateSummaryMetrics(snapshot.lastMetrics.train, snapshot.lastMetrics.eval);
    renderTierStats(snapshot.tierStats);

    const errorBox = document.getElementById('run-error');
    errorBox.hidden = snapshot.error === null;
    errorBox.textContent = snapshot.error ? `${snapshot.error.code || 'ERROR'}: ${snapshot.error.message}` : '';

    if (previous && isActive(previous.status) && !isActive(snapshot.status)) {
      void loadExperiments();
    }
  }

  function updateSummaryMetrics(train, evaluation) {
    if (train) {
      document.getElementById('summary-loss').textContent = formatNumber(train.loss);
      document.getElementById('summary-speed').textContent = formatNumber(train.tokensPerSecond, 0);
    }
    if (evaluation) {
      document.getElementById('summary-val-loss').textContent = formatNumber(evaluation.valLoss);
      document.getElementById('summary-forgetting').textContent = formatNumber(evaluation.forgetting);
    }
  }

  function renderTierStats(tierStats) {
    const body = document.querySelector('#tier-stats tbody');
    body.textContent = '';
    for (const tier of tierStats || []) {
      const row = document.createElement('tr');
      for (const value of [tier.tier, tier.frequency, tier.updateCount, tier.parameterCount, tier.elementCount]) {
        const cell = document.createElement('td');
        cell.textContent = String(value);
        row.appendChild(cell);
      }
      body.appendChild(row);
    }
  }

  async function loadRunMetrics(experiment) {
    let offset = 0;
    for (;;) {
      const query = new URLSearchParams({ offset: String(offset), limit: '5000' });
      if (experiment) {
        query.set('experiment', experiment);
      }
      const page = await api(`/metrics?${query}`);
      page.train.records.forEach(addTrain);
      page.eval.records.forEach(addEval);
      const next = [page.train.nextOffset, page.eval.nextOffset].filter((value) => value !== null);
      if (next.length === 0) {
        return;
      }
      offset = Math.min(...next);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Server-sent events, read through fetch so that the bearer token can be sent as a header

  let reconnectDelay = 1000;

  function setConnection(text) {
    const element = document.getElementById('connection');
    element.textContent = text;
    element.dataset.state = text;
  }

  async function followEvents() {
    for (;;) {
      try {
        const headers = token ? { authorization: `Bearer ${token}` } : {};
        const response = await fetch(`${API}/events`, { headers });
        if (!response.ok || !response.body) {
          throw new Error(`HTTP ${response.status}`);
        }
        setConnection('live');
        reconnectDelay = 1000;
        await readEventStream(response.body);
      } catch (error) {
        // Falls through to the reconnect below.
      }
      setConnection('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, reconnectDelay));
      reconnectDelay = Math.min(reconnectDelay * 2, 10000);
      // Steps sent while disconnected are read back from the metrics endpoint.
      if (state.runKey !== null) {
        await loadRunMetrics().catch(() => undefined);
      }
    }
  }

  async function readEventStream(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        return;
      }
      buffer += decoder.decode(value, { stream: true });
      let end = buffer.indexOf('\n\n');
      while (end !== -1) {
        handleEventBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        end = buffer.indexOf('\n\n');
      }
    }
  }

  function handleEventBlock(block) {
    let type = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) {
        type = line.slice(7);
      } else if (line.startsWith('data: ')) {
        data.push(line.slice(6));
      }
    }
    if (data.length === 0) {
      return;
    }
    const payload = JSON.parse(data.join('\n'));
    switch (type) {
      case 'status':
        updateStatus(payload);
        break;
      case 'step':
        addTrain(payload);
        updateSummaryMetrics(payload, null);
        renderTierStats(payload.tierStats);
        document.getElementById('summary-step').textContent = `${payload.step} / ${state.status ? state.status.totalSteps : '?'}`;
        break;
      case 'eval':
        addEval(payload);
        updateSummaryMetrics(null, payload);
        break;
      default:
        break;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Experiment list

  async function loadExperiments() {
    const result = await api('/experiments');
    document.getElementById('output-dir').textContent = result.outputDir;
    const body = document.getElementById('experiment-rows');
    body.textContent = '';
    for (const experiment of result.experiments) {
      const row = document.createElement('tr');
      row.dataset.experiment = experiment.name;

      const nameCell = document.createElement('td');
      const link = document.createElement('button');
      link.type = 'button';
      link.className = 'link';
      link.textContent = experiment.name;
      link.title = 'Show this experiment\'s curves';
      link.addEventListener('click', () => void showExperiment(experiment.name));
      nameCell.appendChild(link);
      row.appendChild(nameCell);

      const cells = [
        experiment.status + (experiment.stopReason && experiment.stopReason !== experiment.status ? ` (${experiment.stopReason})` : ''),
        experiment.totalSteps === null ? String(experiment.step) : `${experiment.step} / ${experiment.totalSteps}`,
        experiment.bestValLoss === null ? '-' : `${formatNumber(experiment.bestValLoss)} @ ${experiment.bestStep}`,
        formatNumber(experiment.forgetting),
        experiment.checkpoints.join(', '),
        experiment.updatedAt ? new Date(experiment.updatedAt).toLocaleString() : '-',
      ];
      for (const text of cells) {
        const cell = document.createElement('td');
        cell.textContent = text;
        row.appendChild(cell);
      }
      body.appendChild(row);
    }
  }

  async function showExperiment(name) {
    if (state.status && isActive(state.status.status)) {
      showMessages('The charts follow the active run; stop it or wait for it to end to view another experiment.');
      return;
    }
    state.runKey = `view:${name}`;
    state.train.clear();
    state.evals.clear();
    await loadRunMetrics(name);
    document.getElementById('summary-experiment').textContent = name;
    scheduleChartUpdate();
  }

  // ---------------------------------------------------------------------------------------------
  // Start-up

  async function main() {
    const [config, tierInfo, status] = await Promise.all([api('/config'), api('/tier-info'), api('/status')]);
    state.schema = config.jsonSchema;
    state.tierInfo = tierInfo;

    renderFields(config);
    renderPresets(tierInfo);
    createCharts();

    document.getElementById('config-form').addEventListener('submit', startRun);
    document.getElementById('stop').addEventListener('click', stopRun);
    document.getElementById('refresh-experiments').addEventListener('click', () => void loadExperiments());

    updateStatus(status);
    if (status.experimentName !== null) {
      await loadRunMetrics();
    }
    await loadExperiments();
    void followEvents();
  }

  main().catch((error) => {
    setConnection('failed');
    showMessages(`The dashboard failed to load: ${error.message}`, error.issues);
  });
})();
