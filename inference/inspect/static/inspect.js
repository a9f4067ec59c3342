// deepmine inspect: keyboard-first grading of scan candidates (vanilla JS, no build step).
"use strict";

const PAGE = 48;                       // candidates per grid page
const GRADE_KEYS = ["A", "B", "C", "N", "X"];
const ui = {
  total: 0, cursor: 0, grader: "", state: null, bands: [],
  pages: new Map(),                    // page start -> candidates
  busy: Promise.resolve(),             // grading requests are sent one after another
};
const $ = (id) => document.getElementById(id);

function fmt(x, digits) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c])); }

function toast(message, isError) {
  const t = $("toast");
  t.textContent = message;
  t.className = isError ? "error" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, isError ? 8000 : 1500);
}

// the session token the server embedded in this page: required on every POST
const TOKEN = document.querySelector('meta[name="deepmine-token"]').content;

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Deepmine-Token": TOKEN },
    body: JSON.stringify(Object.assign({ catalog: ui.catalog }, body)),
  };
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

function softValue() {                 // slider 0..100 -> softening 0.005..0.5 (log scale)
  return Number((0.005 * Math.pow(100, Number($("soft").value) / 100)).toPrecision(2));
}

function stretchQuery() {
  const kind = $("stretch").value;
  const q = new URLSearchParams({ stretch: kind });
  if (kind === "asinh") q.set("soft", softValue());
  return q;
}

function imageUrl(c, band) {            // names the catalogue and the object: safe to cache
  const q = stretchQuery();
  q.set("band", band);
  return `/api/cutout/${ui.catalog}/${c.rank}-${c.id}.png?${q}`;
}

function pageStart(rank) { return Math.floor(rank / PAGE) * PAGE; }

async function loadPage(start) {
  if (!ui.pages.has(start)) {
    const data = await api(`/api/page?start=${start}&count=${PAGE}&grader=${encodeURIComponent(ui.grader)}`);
    ui.pages.set(start, data.candidates);
  }
  return ui.pages.get(start);
}

function candidate(rank) {
  const page = ui.pages.get(pageStart(rank));
  return page ? page[rank - pageStart(rank)] : null;
}

function setProgress(state) {
  ui.state = state;
  ui.total = state.total;
  $("catalog").textContent = `${state.catalog} · top ${state.total} of ${state.n_catalog} · grades → ${state.grades_file}`;
  const pct = state.total ? (100 * state.graded) / state.total : 0;
  $("bar-fill").style.width = `${pct}%`;
  $("progress-text").textContent =
    `graded ${state.graded} / ${state.total} by ${state.grader}` +
    (state.graded_any > state.graded ? ` · ${state.graded_any} by anyone` : "");
}

function gradeBadge(g) { return g ? `<span class="badge g${g}">${g}</span>` : `<span class="badge none">·</span>`; }

function othersText(grades) {
  return Object.entries(grades || {}).filter(([who]) => who !== ui.grader).map(([who, g]) => `${esc(who)}:${g}`).join(" ");
}

function position(c) {
  if (c.ra !== null && c.dec !== null) return `${fmt(c.ra, 4)} ${c.dec >= 0 ? "+" : ""}${fmt(c.dec, 4)}`;
  if (c.x !== null && c.y !== null) return `x ${fmt(c.x, 1)} y ${fmt(c.y, 1)}`;
  return `${c.source.split("/").pop()}[${c.index}]`;
}

function headHtml(c) {
  return `<span>#${c.rank + 1} <span class="dim">id ${c.id}</span></span> ${gradeBadge((c.grades || {})[ui.grader])}`;
}

function tileHtml(c) {
  const ord = c.ordinality_ref !== null ? c.ordinality_ref : c.ordinality;
  return `<img src="${imageUrl(c, "rgb")}" alt="candidate ${c.id}" loading="lazy">` +
    `<div class="cap head">${headHtml(c)}</div>` +
    `<div class="cap small"><span title="probability">p ${fmt(c.probability, 4)}</span>` +
    `<span title="ordinality">ord ${fmt(ord, 4)}</span></div>` +
    `<div class="cap small" title="position">${esc(position(c))}</div>` +
    `<div class="cap small others">${othersText(c.grades)}</div>`;
}

async function renderGrid() {
  const start = pageStart(ui.cursor);
  const cands = await loadPage(start);
  const grid = $("grid");
  if (grid.dataset.start !== String(start) || grid.dataset.stretch !== stretchQuery().toString()) {
    grid.innerHTML = "";
    for (const c of cands) {
      const div = document.createElement("div");
      div.className = "tile";
      div.id = `tile-${c.rank}`;
      div.dataset.rank = c.rank;
      div.innerHTML = tileHtml(c);
      div.addEventListener("click", () => go(c.rank));
      grid.appendChild(div);
    }
    grid.dataset.start = start;
    grid.dataset.stretch = stretchQuery().toString();
  }
  for (const el of grid.querySelectorAll(".tile.current")) el.classList.remove("current");
  const cur = $(`tile-${ui.cursor}`);
  if (cur) {
    cur.classList.add("current");
    cur.scrollIntoView({ block: "nearest" });
  }
  const pages = Math.max(1, Math.ceil(ui.total / PAGE));
  $("page-text").textContent = `page ${start / PAGE + 1} / ${pages} · candidate ${ui.cursor + 1} / ${ui.total}`;
}

function updateTile(c) {
  const el = $(`tile-${c.rank}`);
  if (el) {
    el.querySelector(".head").innerHTML = headHtml(c);
    el.querySelector(".others").innerHTML = othersText(c.grades);
  }
}

function renderZoom() {
  const c = candidate(ui.cursor);
  if (!c) return;
  $("zoom-rgb").src = imageUrl(c, "rgb");
  const bands = $("zoom-bands");
  bands.innerHTML = ui.bands.map((b, k) =>
    `<figure><img src="${imageUrl(c, k)}" alt="band ${esc(b)}"><figcaption>${esc(b)}</figcaption></figure>`).join("");
  const mine = (c.grades || {})[ui.grader];
  $("zoom-my-grade").outerHTML = `<span id="zoom-my-grade" class="badge big ${mine ? "g" + mine : "none"}">${mine || "ungraded"}</span>`;
  $("zoom-others").textContent = othersText(c.grades) ? `others: ${othersText(c.grades)}` : "";
  const rows = [
    ["rank", `${c.rank + 1} of ${ui.total}`], ["id", c.id],
    ["RA, Dec (deg)", `${fmt(c.ra, 5)}, ${fmt(c.dec, 5)}`], ["x, y (pix)", `${fmt(c.x, 1)}, ${fmt(c.y, 1)}`],
    ["logit", fmt(c.logit, 3)], ["probability", fmt(c.probability, 5)], ["ordinality", fmt(c.ordinality, 5)],
  ];
  if (c.ordinality_ref !== null) rows.push(["ordinality (pool)", fmt(c.ordinality_ref, 5)]);
  if (c.flags) rows.push(["flags", c.flags]);
  rows.push(["cutout", `${esc(c.source)} [${c.index}]`]);
  $("details").innerHTML = rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("");
}

async function go(rank) {
  if (!ui.total) return;
  ui.cursor = Math.max(0, Math.min(ui.total - 1, rank));
  await loadPage(pageStart(ui.cursor));
  await renderGrid();
  renderZoom();
  // fetch the next page ahead, so that moving on is instant
  const next = pageStart(ui.cursor) + PAGE;
  if (next < ui.total) loadPage(next).catch(() => {});
}

function grade(g) {
  const rank = ui.cursor;
  const c = candidate(rank);
  if (!c) return;
  c.grades = Object.assign({}, c.grades, { [ui.grader]: g });    // show at once, confirm below
  updateTile(c);
  go(rank + 1);
  ui.busy = ui.busy.then(async () => {
    try {
      const r = await api("/api/grade", { rank, id: c.id, grade: g, grader: ui.grader });
      c.grades = r.grades;
      updateTile(c);
      setProgress(r.state);
      if (ui.cursor === rank) renderZoom();
    } catch (e) {
      toast(`grade NOT saved: ${e.message}`, true);
      ui.pages.clear();                  // show what the server holds, and go back to the candidate
      $("grid").dataset.start = "";
      await refresh();
      await go(rank);
    }
  });
}

function undo() {
  ui.busy = ui.busy.then(async () => {
    try {
      const r = await api("/api/undo", { grader: ui.grader });
      setProgress(r.state);
      if (r.rank === null || r.rank === undefined) { toast("nothing to undo"); return; }
      await loadPage(pageStart(r.rank));
      const c = candidate(r.rank);
      if (c) { c.grades = r.grades; updateTile(c); }
      toast(`undone: candidate #${r.rank + 1}`);
      await go(r.rank);
    } catch (e) {
      toast(`undo failed: ${e.message}`, true);
    }
  });
}

async function nextUngraded() {
  for (let r = ui.cursor + 1; r < ui.total; r++) {
    const page = await loadPage(pageStart(r));
    const c = page[r - pageStart(r)];
    if (!(c.grades || {})[ui.grader]) return go(r);
  }
  toast("no ungraded candidate after this one");
}

function columns() {
  const tiles = $("grid").querySelectorAll(".tile");
  if (tiles.length < 2) return 1;
  const top = tiles[0].offsetTop;
  let n = 0;
  for (const t of tiles) { if (t.offsetTop !== top) break; n++; }
  return Math.max(1, n);
}

function refreshImages() {
  $("grid").dataset.stretch = "";
  renderGrid();
  renderZoom();
}

async function refresh() {
  const state = await api(`/api/state?grader=${encodeURIComponent(ui.grader)}`);
  if (state.catalog_id !== ui.catalog) {
    toast(`the server now serves another catalogue (${state.catalog}); reload the page`, true);
    throw new Error("catalogue changed");
  }
  setProgress(state);
  ui.bands = state.bands;
  return state;
}

function onKey(e) {
  if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") {
    if (e.key === "Enter" || e.key === "Escape") e.target.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) {
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z") { e.preventDefault(); undo(); }
    return;
  }
  const k = e.key;
  const up = k.length === 1 ? k.toUpperCase() : k;
  let handled = true;
  if (GRADE_KEYS.includes(up)) grade(up);
  else if (up === "U" || up === "Z" || k === "Backspace") undo();
  else if (k === "ArrowRight" || up === "J" || k === " ") go(ui.cursor + 1);
  else if (k === "ArrowLeft" || up === "K") go(ui.cursor - 1);
  else if (k === "ArrowDown") go(ui.cursor + columns());
  else if (k === "ArrowUp") go(ui.cursor - columns());
  else if (k === "PageDown") go(ui.cursor + PAGE);
  else if (k === "PageUp") go(ui.cursor - PAGE);
  else if (k === "Home") go(0);
  else if (k === "End") go(ui.total - 1);
  else if (up === "G") nextUngraded();
  else if (up === "S") {
    const sel = $("stretch");
    sel.selectedIndex = (sel.selectedIndex + 1) % sel.options.length;
    sel.dispatchEvent(new Event("change"));
  } else if (k === "?") $("help").hidden = !$("help").hidden;
  else if (k === "Escape") $("help").hidden = true;
  else handled = false;
  if (handled) e.preventDefault();
}

async function setGrader(name) {
  name = name.trim();
  if (!name) { $("grader").value = ui.grader; return; }
  ui.grader = name;
  sessionStorage.setItem("deepmine-grader", name);
  ui.pages.clear();
  $("grid").dataset.start = "";
  const state = await refresh();
  await go(state.first_ungraded);
}

async function start() {
  const params = new URLSearchParams(location.search);
  const first = await api("/api/state");
  ui.catalog = first.catalog_id;
  ui.grader = params.get("grader") || sessionStorage.getItem("deepmine-grader") || first.default_grader;
  $("grader").value = ui.grader;
  const state = await refresh();
  for (const g of GRADE_KEYS) {
    const b = document.createElement("button");
    b.className = `g${g}`;
    b.title = state.grades[g];
    b.textContent = `${g} · ${state.grades[g]}`;
    b.addEventListener("click", () => grade(g));
    $("grade-buttons").appendChild(b);
  }
  for (const b of document.querySelectorAll("[data-act]")) {
    b.addEventListener("click", () => ({
      prev: () => go(ui.cursor - 1), next: () => go(ui.cursor + 1), undo, ungraded: nextUngraded,
    }[b.dataset.act])());
  }
  $("grader").addEventListener("change", (e) => setGrader(e.target.value));
  const showSoft = () => {
    $("soft").disabled = $("stretch").value !== "asinh";
    $("soft-value").textContent = $("soft").disabled ? "" : softValue();
  };
  $("stretch").addEventListener("change", () => { showSoft(); refreshImages(); });
  $("soft").addEventListener("input", showSoft);
  $("soft").addEventListener("change", refreshImages);
  showSoft();
  $("page-prev").addEventListener("click", () => go(ui.cursor - PAGE));
  $("page-next").addEventListener("click", () => go(ui.cursor + PAGE));
  $("help-button").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
  document.addEventListener("keydown", onKey);
  await go(state.first_ungraded);
  document.body.dataset.ready = "1";
}

start().catch((e) => toast(`cannot load: ${e.message}`, true));
