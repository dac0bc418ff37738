// The card panel: the plan's stacked bar (the parts and colours of `orchestrator plan --png`), each model's planned
// share beside what it really holds, and its state, refreshed every few seconds.
const GIB = 1024 ** 3;
const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
  "#17becf"]; // matplotlib's tab10, as the PNG uses
const FIXED = { reserve: [89, 89, 89], unassigned: [217, 217, 217] };
const HATCH = {
  "//": "repeating-linear-gradient(45deg, rgba(255,255,255,.8) 0 1.5px, transparent 1.5px 6px)",
  "..": "radial-gradient(rgba(255,255,255,.9) 1px, transparent 1.5px) 0 0 / 5px 5px",
  xx: "repeating-linear-gradient(45deg, rgba(255,255,255,.8) 0 1.5px, transparent 1.5px 6px), " +
    "repeating-linear-gradient(-45deg, rgba(255,255,255,.8) 0 1.5px, transparent 1.5px 6px)",
};
const LABELLED = new Set(["weights", "KV cache", "reserve", "free"]); // as the PNG labels its big segments

export const human = (bytes) => (bytes >= GIB ? `${(bytes / GIB).toFixed(2)} GiB`
  : `${Math.round(bytes / 1024 ** 2)} MiB`);

function rgb(model, order) {
  if (FIXED[model]) return FIXED[model];
  const hex = TAB10[order.indexOf(model) % 10];
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

function segment(widthPercent, [r, g, b], alpha, hatch, title, label) {
  const div = document.createElement("div");
  div.className = "segment";
  div.style.width = `${widthPercent}%`;
  div.style.backgroundColor = `rgba(${r}, ${g}, ${b}, ${alpha})`;
  if (hatch) div.style.backgroundImage = HATCH[hatch];
  div.title = title;
  if (label) div.textContent = label;
  return div;
}

export class Card {
  constructor(api, onError) {
    this.api = api;
    this.onError = onError;
    this.plan = null; // fixed for the server's life: fetched once
  }

  async refresh() {
    try {
      if (!this.plan) this.plan = await this.api.get("/health/plan").catch((error) => ({ missing: error.message }));
      const { engines } = await this.api.get("/health/engines");
      this.render(engines);
    } catch (error) {
      this.onError(error);
    }
  }

  render(engines) {
    const plan = this.plan.plan;
    const total = plan ? plan.total_bytes : engines.reduce((sum, e) => sum + e.planned_bytes, 0);
    const order = plan ? plan.models.filter((m) => m.on_card).map((m) => m.name) : engines.map((e) => e.name);
    document.getElementById("card-title").textContent = plan
      ? `Card: ${plan.device}, ${plan.fits ? `fits, ${human(plan.headroom_bytes)} free at its peak` : "does not fit"}`
      : "Card (no plan served)";
    this.drawPlan(total, order, engines);
    this.drawActual(total, order, engines);
    this.drawLegend(order);
    this.drawTable(engines);
    document.getElementById("card-note").textContent = plan ? "" : this.plan.missing;
  }

  drawPlan(total, order, engines) {
    const styles = Object.fromEntries((this.plan.parts || []).map((p) => [p.part, p]));
    const bar = this.plan.bar || engines.map((e) => ({ model: e.name, part: "share", gib: e.planned_bytes / GIB }));
    document.getElementById("plan-bar").replaceChildren(...bar.map(({ model, part, gib }) => {
      const style = styles[part] || { alpha: 1, hatch: null };
      const percent = ((gib * GIB) / total) * 100;
      const label = percent > 6 && LABELLED.has(part) ? `${model}\n${part} ${gib.toFixed(1)}` : "";
      return segment(percent, rgb(model, order), style.alpha, style.hatch, `${model}: ${part} ${gib.toFixed(2)} GiB`,
        label);
    }));
  }

  drawActual(total, order, engines) {
    const held = engines.filter((e) => e.actual_bytes != null);
    document.getElementById("actual-bar").replaceChildren(...held.map((e) => {
      const percent = (e.actual_bytes / total) * 100;
      return segment(percent, rgb(e.name, order), 1, null, `${e.name}: holds ${human(e.actual_bytes)}`,
        percent > 6 ? `${e.name}\n${(e.actual_bytes / GIB).toFixed(1)}` : "");
    }));
  }

  drawLegend(order) {
    const parts = (this.plan.parts || []).filter((p) => p.hatch);
    const items = [...order, "reserve", "unassigned"].map((name) => {
      const [r, g, b] = rgb(name, order);
      return [name, `rgb(${r}, ${g}, ${b})`, null];
    }).concat(parts.map((p) => [p.part, "#999", HATCH[p.hatch]]));
    document.getElementById("legend").replaceChildren(...items.map(([name, colour, hatch]) => {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = colour;
      if (hatch) swatch.style.backgroundImage = hatch;
      li.append(swatch, name);
      return li;
    }));
  }

  drawTable(engines) {
    const rows = engines.map((e) => {
      const tr = document.createElement("tr");
      tr.dataset.model = e.name;
      const held = e.actual_bytes != null && e.planned_bytes;
      const ratio = held ? `${Math.round((e.actual_bytes / e.planned_bytes) * 100)}%` : "";
      const cells = [e.name, e.kind, e.state, human(e.planned_bytes),
        e.actual_bytes == null ? "in server" : human(e.actual_bytes), ratio, String(e.restarts)];
      for (const [i, text] of cells.entries()) {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 2) {
          td.className = `state state-${e.state}`;
          td.dataset.field = "state";
          td.title = e.detail || "";
        }
        if (i === 3) td.dataset.field = "share";
        if (i === 4) td.dataset.field = "actual";
        if (i === 5 && e.actual_bytes > e.planned_bytes) td.className = "over";
        tr.append(td);
      }
      return tr;
    });
    document.querySelector("#models tbody").replaceChildren(...rows);
  }
}
