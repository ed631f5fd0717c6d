// One run: its DAG with each action's live state, an action's executions, its history,
// its related runs, and the lifecycle and repair buttons (each one POST of the JSON API).
import { get, post } from "./api.js";
import { drawDag } from "./dag.js";
import { every, h, json, showError, statusBadge, time } from "./dom.js";

const REFRESH_SECONDS = 2;
const ENDED = ["COMPLETED", "FAILED", "TERMINATED"];

function duration(start, end) {
  if (!start || !end) return "";
  const ms = new Date(end) - new Date(start);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function runLink(link, text) {
  return h("a", { href: `#/run/${link.flowId || link}`, class: "mono" }, text || link.flowId || link);
}

function executionRows(executions) {
  return executions.map((execution) =>
    h("div", { class: "execution", "data-seq": execution.seq },
      h("div", {}, h("strong", {}, `#${execution.seq} `), statusBadge(execution.status),
        ` attempts ${execution.attempts} · ${time(execution.startedAt)}`,
        execution.endedAt ? ` → ${time(execution.endedAt)} (${duration(execution.startedAt, execution.endedAt)})` : ""),
      h("details", { open: true }, h("summary", {}, "input"), json(execution.input)),
      execution.output !== null && execution.output !== undefined
        ? h("details", { open: true }, h("summary", {}, "output"), json(execution.output)) : null,
      execution.error ? h("div", { class: "exec-error" }, `error: ${typeof execution.error === "string" ? execution.error : JSON.stringify(execution.error)}`) : null));
}

function historyList(entries) {
  return h("ol", { class: "timeline" },
    entries.map((entry) => {
      const { at, event, by, action, ...fields } = entry;
      const rest = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== "" && v !== null));
      return h("li", { class: "history-entry", "data-event": event },
        h("span", { class: "when" }, time(at)), " ",
        h("strong", {}, event),
        action !== undefined && action !== null ? ` action ${action}` : "",
        by ? h("span", { class: "by" }, ` by ${by}`) : "",
        Object.keys(rest).length ? h("code", { class: "rest" }, ` ${JSON.stringify(rest)}`) : "");
    }));
}

export async function showRun(view, flowId, isCurrent) {
  const base = `/flow/${encodeURIComponent(flowId)}`;
  let definition = null;
  let selected = null;
  let run = null;
  const title = h("h1", {}, "Run ", h("span", { class: "mono" }, flowId), " ");
  const status = h("span", { id: "run-status" });
  title.append(status);
  const meta = h("div", { class: "meta" });
  const outcome = h("div", { id: "outcome", class: "outcome", role: "status" });
  const dag = h("div", { id: "dag", class: "dag-box" });
  const panel = h("div", { id: "executions", class: "panel" }, h("p", { class: "muted" }, "Click an action to see its executions."));
  const history = h("div", { id: "history" });
  const documents = h("div", { id: "documents" });

  const act = async (label, request) => {
    outcome.textContent = "";
    outcome.className = "outcome";
    try {
      const answer = await request();
      outcome.textContent = `${label}: ${JSON.stringify(answer)}`;
      outcome.classList.add("ok");
      await refresh();
      return answer;
    } catch (error) {
      outcome.textContent = `${label} refused: ${error.message}`;
      outcome.classList.add("refused");
      return null;
    }
  };
  const button = (label, path) =>
    h("button", { type: "button", id: `do-${label}`, onclick: () => act(label, () => post(`${base}/${label}`)) }, label);
  const rerun = h("button", {
    type: "button",
    id: "do-rerun",
    onclick: async () => {
      const answer = await act("rerun", () => post(`${base}/rerun`));
      if (answer && answer.flowId) location.hash = `#/run/${answer.flowId}`;
    },
  }, "rerun");
  const eventName = h("input", { id: "event-name", placeholder: "event name", size: 14 });
  const eventData = h("input", { id: "event-data", placeholder: '{"data": "as JSON"}', size: 24 });
  const eventForm = h("form", { id: "event-form", class: "inline" }, eventName, eventData,
    h("button", { type: "submit" }, "send event"));
  eventForm.addEventListener("submit", (event) => {
    event.preventDefault();
    let data = {};
    try {
      data = eventData.value.trim() ? JSON.parse(eventData.value) : {};
    } catch (error) {
      outcome.textContent = `event data is not JSON: ${error.message}`;
      outcome.className = "outcome refused";
      return;
    }
    act(`event ${eventName.value}`, () => post(`${base}/events/${encodeURIComponent(eventName.value.trim())}`, data));
  });

  const loadExecutions = async () => {
    if (selected === null) return;
    const answer = await get(`${base}/actions/${selected}/executions?limit=50`);
    const action = (definition.actions || []).find((a) => a.id === selected) || {};
    panel.replaceChildren(
      h("h2", {}, `Action ${selected} · ${action.name || ""}`),
      h("p", { class: "muted" }, `${answer.total} execution(s)${answer.nextOffset !== null && answer.nextOffset !== undefined ? `, first ${answer.executions.length} shown` : ""}`),
      ...executionRows(answer.executions),
    );
  };
  const select = (id) => {
    selected = id;
    draw();
    loadExecutions().catch(showError);
  };
  const draw = () => {
    if (definition && run) drawDag(dag, definition, run.actions || {}, select, selected);
  };

  const refresh = async () => {
    run = await get(base);
    if (!definition) {
      definition = await get(`/metadata/workflow/${encodeURIComponent(run.name)}?version=${run.version}`);
    }
    status.replaceChildren(statusBadge(run.status), run.reason ? h("span", { class: "reason" }, ` ${run.reason}`) : "");
    meta.replaceChildren(...[
      h("span", {}, "workflow ", h("a", { href: `#/definition/${encodeURIComponent(run.name)}?version=${run.version}` }, `${run.name} v${run.version}`)),
      h("span", {}, `started ${time(run.createdAt)}`),
      h("span", {}, `updated ${time(run.updatedAt)}`),
      run.finishedAt ? h("span", {}, `finished ${time(run.finishedAt)}`) : null,
      run.parent ? h("span", { id: "parent" }, "parent ", runLink(run.parent)) : null,
      run.rerunOf ? h("span", { id: "rerun-of" }, "rerun of ", runLink(run.rerunOf)) : null,
      run.children && run.children.length
        ? h("span", { id: "children" }, `children (${run.childrenCount}) `,
          run.children.map((child) => [runLink(child, `${child.flowId.slice(0, 8)}… (action ${child.actionId})`), " "]))
        : null,
    ].filter(Boolean));
    draw();
    const [entries] = await Promise.all([get(`${base}/history`), loadExecutions()]);
    history.replaceChildren(h("h2", {}, "History"), historyList(entries.history));
    documents.replaceChildren(
      h("details", {}, h("summary", {}, "input"), json(run.input)),
      h("details", {}, h("summary", {}, "data (variables and outputs)"), json(run.data)),
      h("details", { open: ENDED.includes(run.status) }, h("summary", {}, "output"), json(run.output)),
    );
  };

  view.replaceChildren(
    title,
    meta,
    h("div", { class: "toolbar" },
      button("pause"), button("resume"), button("terminate"), button("retry"), rerun, eventForm),
    outcome,
    h("div", { class: "split" }, dag, panel),
    documents,
    history,
  );
  await every(REFRESH_SECONDS, refresh, isCurrent);
}
