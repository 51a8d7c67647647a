// The plate page. The map is drawn once per plate; after that only changed wells are touched:
// the server streams what changed since the version this page last saw (server-sent events).
"use strict";

const LAYOUTS = { 96: [8, 12], 384: [16, 24], 1536: [32, 48] };
const page = {
  version: -1,
  plates: new Map(),   // name -> {name, format, frames, flagged, wells: {C07: [seen, flagged, corrected]}, unplaced}
  order: [],           // plate names, newest first
  current: null,       // the plate shown
  cells: new Map(),    // well name -> its square on the map
  well: null,          // {plate, well, fields} of the open well
  viewer: -1,          // index in page.well.fields shown large, -1 when closed
  access: { local: true, token_needed: false },
  events: null,
  timings: [],         // ms each of the last 200 updates took to apply (bench/plate_page.py)
  drawnAt: null,       // when the map was last drawn (performance.now())
};
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------- talking

async function api(path, options = {}) {
  const response = await fetch(path, { cache: "no-store", ...options });
  let body = null;
  try { body = await response.json(); } catch (_) { /* an empty or non-JSON answer */ }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

async function loadState() {
  const state = await api("/api/state");
  page.version = state.version;
  page.access = state.access;
  page.plates = new Map(state.plates.map((p) => [p.name, p]));
  page.order = state.plates.map((p) => p.name);
  if (page.current === null || !page.plates.has(page.current)) page.current = page.order[0] ?? null;
  renderAccess();
  renderTabs();
  renderPlate();
  renderStatus(state.status);
  if (page.well) openWell(page.well.plate, page.well.well, { quiet: true });
  listen();
}

function listen() {
  if (page.events) page.events.close();
  const events = page.events = new EventSource(`/api/events?since=${page.version}`);
  events.addEventListener("open", () => setConnection("live", "live"));
  events.addEventListener("error", () => setConnection("lost", "reconnecting…"));
  events.addEventListener("wells", (e) => applyChanges(JSON.parse(e.data)));
  events.addEventListener("status", (e) => renderStatus(JSON.parse(e.data)));
  events.addEventListener("reset", () => loadState().catch(showError));
}

function setConnection(state, text) {
  const box = $("connection");
  box.dataset.state = state;
  box.textContent = text;
}

// ------------------------------------------------------------------------------- plates

function applyChanges(changes) {
  const started = performance.now();  // the cost of an update, for bench/plate_page.py
  page.version = changes.version;
  let tabs = false;
  for (const header of changes.plates) {
    let plate = page.plates.get(header.name);
    if (!plate) {
      plate = { ...header, wells: {} };
      page.plates.set(header.name, plate);
      page.order.unshift(header.name);
      tabs = true;
    }
    const grew = plate.format !== header.format;
    Object.assign(plate, header, { wells: plate.wells });
    if (grew && header.name === page.current) page.redraw = true;
  }
  if (page.current === null && page.order.length) { page.current = page.order[0]; page.redraw = true; }
  let openWellChanged = false;
  for (const [plateName, well, counts] of changes.wells) {
    const plate = page.plates.get(plateName);
    if (!plate) continue;
    const before = plate.wells[well];
    plate.wells[well] = counts;
    if (before && before[1] === 0 && counts[1] > 0) tabs = true;
    if (plateName === page.current && !page.redraw) paintWell(well, counts);
    if (page.well && page.well.plate === plateName && page.well.well === well) openWellChanged = true;
  }
  if (page.redraw) { page.redraw = false; renderPlate(); } else renderCounts();
  if (tabs) renderTabs(); else updateTabCounts();
  if (openWellChanged) openWell(page.well.plate, page.well.well, { quiet: true });
  page.timings.push(performance.now() - started);
  if (page.timings.length > 200) page.timings.shift();
}

function renderTabs() {
  const nav = $("plates");
  nav.replaceChildren(...page.order.map((name) => {
    const plate = page.plates.get(name);
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.plate = name;
    button.setAttribute("role", "tab");
    button.setAttribute("aria-selected", String(name === page.current));
    button.append(plateName(name));
    const n = document.createElement("span");
    n.className = "n";
    button.append(n);
    button.addEventListener("click", () => { page.current = name; closeWell(); renderTabs(); renderPlate(); });
    fillTab(button, plate);
    return button;
  }));
}

function updateTabCounts() {
  for (const button of $("plates").children) fillTab(button, page.plates.get(button.dataset.plate));
}

function fillTab(button, plate) {
  button.querySelector(".n").textContent = `${plate.format} · ${plate.flagged} flagged`;
}

function plateName(name) { return name || "(no plate name)"; }

function renderPlate() {
  const grid = $("plate");
  page.cells.clear();
  const plate = page.plates.get(page.current);
  if (!plate) {
    grid.replaceChildren();
    $("plate-title").textContent = "Waiting for the first frame…";
    $("plate-counts").replaceChildren();
    return;
  }
  const [rows, columns] = LAYOUTS[plate.format];
  const dense = plate.format === 1536;
  grid.style.setProperty("grid-template-columns", `1.8em repeat(${columns}, minmax(0, 1fr))`);
  grid.style.setProperty("--gap", dense ? "1px" : plate.format === 384 ? "2px" : "4px");
  grid.style.setProperty("--radius", dense ? "1px" : plate.format === 384 ? "2px" : "5px");
  grid.style.setProperty("--axis-font", dense ? "8px" : "11px");
  grid.style.setProperty("--cell-font", plate.format === 96 ? "12px" : "0px");
  grid.style.setProperty("--max-width", plate.format === 96 ? "820px" : "100%");
  const parts = [document.createElement("span")];
  for (let c = 1; c <= columns; c++) parts.push(axis(dense && c % 2 === 0 ? "" : String(c), "column"));
  for (let r = 0; r < rows; r++) {
    const letters = rowName(r);
    parts.push(axis(letters, "row"));
    for (let c = 1; c <= columns; c++) {
      const name = `${letters}${String(c).padStart(2, "0")}`;
      const cell = document.createElement("button");
      cell.type = "button";
      cell.className = "cell";
      cell.dataset.well = name;
      page.cells.set(name, cell);
      parts.push(cell);
      paintWell(name, plate.wells[name]);
    }
  }
  grid.replaceChildren(...parts);
  renderCounts();
  renderUnplaced(plate);
  page.drawnAt = performance.now();
}

// One click handler for the whole map (1536 squares need no 1536 listeners).
function onMapClick(event) {
  const cell = event.target.closest(".cell");
  if (!cell || cell.classList.contains("empty")) return;
  openWell(page.current, cell.dataset.well);
}

function axis(text, kind) {
  const span = document.createElement("span");
  span.className = `axis ${kind}`;
  span.textContent = text;
  return span;
}

function rowName(index) {
  let name = "";
  for (let n = index + 1; n > 0; n = Math.floor((n - 1) / 26)) name = String.fromCharCode(65 + ((n - 1) % 26)) + name;
  return name;
}

function paintWell(name, counts) {
  const cell = page.cells.get(name);
  if (!cell) { renderUnplaced(page.plates.get(page.current)); return; }
  const [seen, flagged, corrected] = counts || [0, 0, 0];
  cell.classList.toggle("empty", seen === 0);
  cell.classList.toggle("flagged", flagged > 0);
  cell.classList.toggle("corrected", corrected > 0);
  cell.classList.toggle("selected", !!(page.well && page.well.plate === page.current && page.well.well === name));
  cell.style.setProperty("background", seen === 0 ? "" : wellColour(flagged / seen));
  cell.textContent = seen && page.plates.get(page.current).format === 96 ? (flagged ? `${flagged}/${seen}` : "") : "";
  cell.title = seen === 0 ? `${name}: not acquired yet`
    : `${name}: ${flagged} of ${seen} field${seen === 1 ? "" : "s"} flagged${corrected ? `, ${corrected} corrected` : ""}`;
  cell.setAttribute("aria-label", cell.title);
}

// Green when no field is flagged; from amber (a few) to red (all) by the flagged fraction.
function wellColour(fraction) {
  if (fraction <= 0) return "var(--clean)";
  const hue = 38 * (1 - Math.min(1, fraction));
  return `hsl(${hue.toFixed(1)}, 78%, ${(52 + 4 * (1 - fraction)).toFixed(1)}%)`;
}

function renderCounts() {
  const plate = page.plates.get(page.current);
  if (!plate) return;
  $("plate-title").textContent = `Plate ${plateName(plate.name)}`;
  const box = $("plate-counts");
  box.replaceChildren(
    `${plate.format} wells · `, bold(plate.wells_seen), " wells seen · ", bold(plate.frames),
    " fields · ", bold(plate.flagged, plate.flagged ? "bad" : ""), " flagged");
}

function renderUnplaced(plate) {
  const box = $("unplaced");
  if (!plate || !plate.unplaced.length) { box.hidden = true; return; }
  box.hidden = false;
  box.replaceChildren("Wells without a plate position: ", ...plate.unplaced.map((well) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = well || "(no well)";
    button.addEventListener("click", () => openWell(plate.name, well));
    return button;
  }));
}

function bold(text, className = "") {
  const b = document.createElement("b");
  b.textContent = String(text);
  if (className) b.className = className;
  return b;
}

// ------------------------------------------------------------------------------- a well

async function openWell(plate, well, { quiet = false } = {}) {
  try {
    const found = await api(`/api/well?plate=${encodeURIComponent(plate)}&well=${encodeURIComponent(well)}`);
    const previous = page.well;
    page.well = found;
    if (previous && previous.plate === plate && previous.well !== well) paintWell(previous.well, page.plates.get(plate).wells[previous.well]);
    if (!previous || previous.well !== well) {
      for (const cell of page.cells.values()) cell.classList.remove("selected");
      const cell = page.cells.get(well);
      if (cell && plate === page.current) cell.classList.add("selected");
    }
    renderWell();
    if (!quiet) $("well").scrollIntoView({ behavior: "smooth", block: "nearest" });
  } catch (error) {
    if (!quiet) showError(error);
  }
}

function closeWell() {
  page.well = null;
  $("well").hidden = true;
  for (const cell of page.cells.values()) cell.classList.remove("selected");
  closeViewer();
}

function renderWell() {
  const { plate, well, counts, fields } = page.well;
  const [seen, flagged, corrected] = counts;
  $("well").hidden = false;
  $("well-title").textContent = `${well || "(no well)"} · plate ${plateName(plate)}`;
  $("well-counts").replaceChildren(bold(flagged, flagged ? "bad" : ""), ` of ${seen} field${seen === 1 ? "" : "s"} flagged`,
    corrected ? ` · ${corrected} corrected` : "");
  $("fields").replaceChildren(...fields.map((field, index) => fieldCard(field, index)));
  if (page.viewer >= 0) showViewer(Math.min(page.viewer, fields.length - 1));
}

function fieldCard(field, index) {
  const card = document.createElement("article");
  card.className = `field${field.shown_flagged ? " flagged" : ""}`;
  card.dataset.row = field.row;
  const shot = document.createElement("button");
  shot.type = "button";
  shot.className = "shot";
  shot.title = "Larger view";
  if (field.thumbnail) {
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = `field ${field.field} with its artifacts outlined`;
    img.src = thumbnailUrl(field, true);
    shot.append(img);
  } else {
    const missing = document.createElement("div");
    missing.className = "missing";
    missing.textContent = "no thumbnail stored";
    shot.append(missing);
  }
  shot.addEventListener("click", () => showViewer(index));
  const info = document.createElement("div");
  info.className = "info";
  info.append(
    line(fieldName(field), verdictBadges(field)),
    line("score", bold(fmt(field.score, 3))),
    line("artifact area", bold(`${fmt(field.area_fraction * 100, 2)} %`)),
    line("artifacts", bold(field.n_artifacts)),
    correctionButtons(field),
  );
  card.append(shot, info);
  return card;
}

// Channel and plane are named only where the well's frames differ in them.
function fieldName(field) {
  const fields = page.well ? page.well.fields : [field];
  const parts = [field.field >= 0 ? `field ${field.field}` : field.source];
  if (new Set(fields.map((f) => f.channel)).size > 1) parts.push(`ch ${field.channel}`);
  if (new Set(fields.map((f) => f.plane)).size > 1) parts.push(`z ${field.plane}`);
  return bold(parts.join(" · "));
}

function verdictBadges(field) {
  const box = document.createElement("span");
  const model = document.createElement("span");
  model.className = `badge${field.flagged ? " flagged" : ""}`;
  model.textContent = field.flagged ? "flagged" : "clean";
  model.title = "the model's verdict";
  box.append(model);
  if (field.correction) {
    const op = document.createElement("span");
    op.className = "badge operator";
    op.textContent = ` → ${field.correction}`;
    op.title = `corrected by ${field.corrected_by} at ${field.corrected_at}`;
    box.append(" ", op);
  }
  return box;
}

function line(label, value) {
  const div = document.createElement("div");
  div.className = "line";
  const span = document.createElement("span");
  span.append(label);
  div.append(span, value);
  return div;
}

function correctionButtons(field) {
  const box = document.createElement("div");
  box.className = "correct";
  for (const label of ["clean", "artifact"]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = label;
    button.dataset.label = label;
    button.textContent = label === "clean" ? "Mark clean" : "Mark artifact";
    button.setAttribute("aria-pressed", String(field.correction === label));
    button.title = `Record that this field is ${label === "clean" ? "clean" : "an artifact field"} (overrides the model)`;
    button.addEventListener("click", () => correct(field, label, box));
    box.append(button);
  }
  return box;
}

async function correct(field, label, box) {
  const headers = { "Content-Type": "application/json" };
  const token = $("token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  for (const button of box.querySelectorAll("button")) button.disabled = true;
  try {
    const shown = await api("/api/corrections", { method: "POST", headers, body: JSON.stringify({ row: field.row, label }) });
    Object.assign(field, shown);
    toast(`${field.source}: recorded as ${label}`, true);
    renderWell();
  } catch (error) {
    showError(error);
    for (const button of box.querySelectorAll("button")) button.disabled = false;
  }
}

function thumbnailUrl(field, outlines) {
  return `/api/frames/${field.row}/thumbnail.png${outlines ? "" : "?outlines=0"}`;
}

function fmt(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

// ------------------------------------------------------------------------------- larger view

function showViewer(index) {
  const fields = page.well ? page.well.fields : [];
  if (index < 0 || index >= fields.length) return;
  page.viewer = index;
  const field = fields[index];
  $("viewer").hidden = false;
  $("viewer-title").textContent = `${page.well.well} · ${field.field >= 0 ? `field ${field.field}` : ""} · ${field.source}`;
  const img = $("viewer-img");
  if (field.thumbnail) {
    img.hidden = false;
    img.src = thumbnailUrl(field, $("viewer-outlines").checked);
    img.alt = `${field.source}, larger`;
  } else {
    img.hidden = true;
  }
  $("viewer-facts").replaceChildren(verdictBadges(field), " score ", bold(fmt(field.score, 3)), " · area ",
    bold(`${fmt(field.area_fraction * 100, 2)} %`), " · ", bold(field.n_artifacts),
    field.n_artifacts === 1 ? " artifact" : " artifacts");
  $("viewer-actions").replaceChildren(correctionButtons(field));
  $("viewer-prev").disabled = index === 0;
  $("viewer-next").disabled = index === fields.length - 1;
}

function closeViewer() {
  page.viewer = -1;
  $("viewer").hidden = true;
}

// ------------------------------------------------------------------------------- status

function renderStatus(status) {
  $("throughput").textContent = fmt(status.throughput_fps, 1);
  $("processed").textContent = `last 30 s · ${status.frames} durable this run, ${status.flagged} flagged`;
  $("backlog").textContent = status.backlog ?? "–";
  const store = $("store-state");
  store.replaceChildren(status.store_writable === false ? bold("results store not writable: intake paused", "bad") : "results store writable");
  const failures = Object.entries(status.failures || {}).sort((a, b) => b[1] - a[1]);
  $("failures").tBodies[0].replaceChildren(...(failures.length ? failures.map(([reason, n]) => {
    const row = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = reason;
    const count = document.createElement("td");
    count.textContent = n;
    row.append(name, count);
    return row;
  }) : [noneRow()]));
  renderEngine(status.engine);
  renderAlerts(status.alerts || []);
}

function noneRow() {
  const row = document.createElement("tr");
  const cell = document.createElement("td");
  cell.className = "none";
  cell.textContent = "none";
  row.append(cell);
  return row;
}

function renderEngine(engine) {
  const box = $("engine");
  if (!engine) { box.textContent = "–"; return; }
  const facts = [["backend", engine.backend], ["device", engine.device], ["model", engine.model],
    ["precision", engine.precision], ["engines", engine.workers]];
  box.replaceChildren(...facts.filter(([, v]) => v !== undefined && v !== "").map(([k, v]) => {
    const div = document.createElement("div");
    const key = document.createElement("span");
    key.textContent = k;
    const value = document.createElement("span");
    value.textContent = v;
    div.append(key, value);
    return div;
  }));
}

function renderAlerts(alerts) {
  const list = $("alerts");
  if (!alerts.length) {
    const none = document.createElement("li");
    none.className = "none";
    none.textContent = "none";
    list.replaceChildren(none);
    return;
  }
  list.replaceChildren(...alerts.slice(0, 12).map((alert) => {
    const li = document.createElement("li");
    li.className = `alert ${alert.state}`;
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = alert.state;
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = (alert.at || "").replace("T", " ").replace(/\.\d+Z$/, " UTC");
    const text = document.createElement("div");
    text.textContent = alert.message;
    li.append(state, when, text);
    return li;
  }));
}

function renderAccess() {
  $("token-box").hidden = !page.access.token_needed;
}

// ------------------------------------------------------------------------------- messages

let toastTimer = null;
function toast(text, ok = false) {
  const box = $("toast");
  box.textContent = text;
  box.className = `toast${ok ? " ok" : ""}`;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, ok ? 2500 : 6000);
}

function showError(error) { toast(error.message || String(error)); }

// ------------------------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  $("plate").addEventListener("click", onMapClick);
  $("well-close").addEventListener("click", closeWell);
  $("viewer-close").addEventListener("click", closeViewer);
  $("viewer").addEventListener("click", (e) => { if (e.target === $("viewer")) closeViewer(); });
  $("viewer-prev").addEventListener("click", () => showViewer(page.viewer - 1));
  $("viewer-next").addEventListener("click", () => showViewer(page.viewer + 1));
  $("viewer-outlines").addEventListener("change", () => showViewer(page.viewer));
  $("token-box").addEventListener("submit", (e) => e.preventDefault());
  $("token").value = sessionStorage.getItem("artifactd-token") || "";
  $("token").addEventListener("change", () => sessionStorage.setItem("artifactd-token", $("token").value.trim()));
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement && e.target.type !== "checkbox") return;
    if (page.viewer >= 0) {
      if (e.key === "Escape") closeViewer();
      else if (e.key === "ArrowLeft") showViewer(page.viewer - 1);
      else if (e.key === "ArrowRight") showViewer(page.viewer + 1);
      else if (e.key === "o") { $("viewer-outlines").checked = !$("viewer-outlines").checked; showViewer(page.viewer); }
    } else if (e.key === "Escape" && page.well) closeWell();
  });
  loadState().catch((error) => { setConnection("lost", "cannot reach the service"); showError(error); });
});
