// Runs: the indexed search of GET /flow, a page at a time (cursor), refreshed live.
import { get } from "./api.js";
import { every, h, showError, statusBadge, time } from "./dom.js";

const REFRESH_SECONDS = 3;
const PAGE_SIZE = 25;
const STATUSES = ["RUNNING", "PAUSED", "COMPLETED", "FAILED", "TERMINATED"];
const TIME_FILTERS = ["startedAfter", "startedBefore", "endedAfter", "endedBefore"];

function localInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

function searchQuery(params, cursor) {
  const query = new URLSearchParams();
  for (const key of ["name", "version", "status", ...TIME_FILTERS]) {
    if (params.get(key)) query.set(key, params.get(key));
  }
  for (const where of params.getAll("where")) if (where) query.append("where", where);
  query.set("limit", String(PAGE_SIZE));
  if (cursor) query.set("cursor", cursor);
  return query;
}

function filterForm(params, workflows) {
  const statuses = (params.get("status") || "").split(",").filter(Boolean);
  const form = h(
    "form",
    { id: "run-filters", class: "filters" },
    h("label", {}, "Workflow ",
      h("select", { name: "name" }, h("option", { value: "" }, "any"),
        workflows.map((w) => h("option", { value: w.name, selected: w.name === params.get("name") }, w.name)))),
    h("label", {}, "Version ", h("input", { name: "version", type: "number", min: 1, size: 4, value: params.get("version") || "" })),
    h("label", {}, "Status ",
      h("select", { name: "status", multiple: true, size: 5 },
        STATUSES.map((s) => h("option", { value: s, selected: statuses.includes(s) }, s)))),
    TIME_FILTERS.map((key) =>
      h("label", {}, `${key} `, h("input", { name: key, type: "datetime-local", value: localInput(params.get(key)) }))),
    h("label", { class: "wide" }, "Where (one per line: $.vars.x=value) ",
      h("textarea", { name: "where", rows: 2, cols: 34, placeholder: "$.vars.orderId=A-1001" },
        params.getAll("where").join("\n"))),
    h("button", { type: "submit" }, "Search"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const next = new URLSearchParams();
    if (data.get("name")) next.set("name", data.get("name"));
    if (data.get("version")) next.set("version", data.get("version"));
    const chosen = data.getAll("status");
    if (chosen.length) next.set("status", chosen.join(","));
    for (const key of TIME_FILTERS) {
      if (data.get(key)) next.set(key, new Date(data.get(key)).toISOString());
    }
    for (const line of String(data.get("where") || "").split("\n")) {
      if (line.trim()) next.append("where", line.trim());
    }
    location.hash = `#/runs?${next}`;
  });
  return form;
}

export async function showRuns(view, params, isCurrent) {
  let workflows = [];
  try {
    workflows = await get("/metadata/workflow");
  } catch (error) {
    showError(error);
  }
  const cursors = [null];
  const live = h("input", { type: "checkbox", id: "live", checked: true });
  const body = h("tbody");
  const pageInfo = h("span", { class: "muted" });
  const previous = h("button", { type: "button", id: "previous-page" }, "Previous page");
  const next = h("button", { type: "button", id: "next-page" }, "Next page");
  let nextCursor = null;

  const load = async () => {
    const answer = await get(`/flow?${searchQuery(params, cursors.at(-1))}`);
    nextCursor = answer.nextCursor;
    next.disabled = !nextCursor;
    previous.disabled = cursors.length === 1;
    pageInfo.textContent = `page ${cursors.length} · ${answer.runs.length} run${answer.runs.length === 1 ? "" : "s"} · ${new Date().toLocaleTimeString()}`;
    body.replaceChildren(
      ...answer.runs.map((run) =>
        h("tr", { class: "run-row", "data-flow-id": run.id },
          h("td", {}, h("a", { href: `#/run/${run.id}`, class: "mono" }, run.id)),
          h("td", {}, run.name),
          h("td", {}, run.version),
          h("td", {}, statusBadge(run.status)),
          h("td", {}, time(run.createdAt)),
          h("td", {}, time(run.updatedAt)))),
    );
    if (!answer.runs.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No run matches.")));
    showError(null);
  };
  next.addEventListener("click", () => {
    if (nextCursor) cursors.push(nextCursor);
    load().catch(showError);
  });
  previous.addEventListener("click", () => {
    if (cursors.length > 1) cursors.pop();
    load().catch(showError);
  });

  view.replaceChildren(
    h("h1", {}, "Runs"),
    filterForm(params, workflows),
    h("div", { class: "toolbar" }, previous, next, h("label", {}, live, " live refresh"), pageInfo),
    h("table", { class: "runs" },
      h("thead", {}, h("tr", {}, ["id", "workflow", "version", "status", "started", "updated"].map((c) => h("th", {}, c)))),
      body),
  );
  await every(REFRESH_SECONDS, async () => {
    if (live.checked || !body.childElementCount) await load();
  }, isCurrent);
}
