// Queues and workers: GET /tasks/queues, and GET /workers where the server has it.
import { ApiError, get } from "./api.js";
import { every, h, time } from "./dom.js";

const REFRESH_SECONDS = 3;
const OPTIONAL = ["leased", "retrying", "oldestQueuedAgeSeconds", "workers"];

function age(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return seconds < 120 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
}

export async function showQueues(view, isCurrent) {
  const queues = h("div", { id: "queues" });
  const workers = h("div", { id: "workers" });
  view.replaceChildren(h("h1", {}, "Queues and workers"), queues, workers);
  const refresh = async () => {
    const answer = await get("/tasks/queues");
    const rows = answer.queues;
    const present = OPTIONAL.filter((field) => rows.some((row) => field in row));
    queues.replaceChildren(
      h("table", { class: "queues" },
        h("thead", {}, h("tr", {}, ["action", "queued", ...present.map((f) => ({ oldestQueuedAgeSeconds: "oldest queued" }[f] || f)), "last poll", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, rows.map((row) =>
          h("tr", { class: row.noWorker ? "queue no-worker" : "queue", "data-action": row.action },
            h("td", {}, row.action),
            h("td", {}, row.depth),
            present.map((field) => h("td", {}, field === "oldestQueuedAgeSeconds" ? age(row[field]) : row[field])),
            h("td", {}, row.lastPollAt ? time(row.lastPollAt) : "never"),
            h("td", {}, row.noWorker ? h("span", { class: "flag" }, "no worker") : ""))))));
    try {
      const seen = await get("/workers");
      workers.replaceChildren(
        h("h2", {}, "Workers"),
        h("table", { class: "workers" },
          h("thead", {}, h("tr", {}, ["worker", "actions", "last poll", "tasks in hand"].map((c) => h("th", {}, c)))),
          h("tbody", {}, seen.workers.map((worker) =>
            h("tr", {},
              h("td", { class: "mono" }, worker.workerId),
              h("td", {}, (worker.actions || []).join(", ")),
              h("td", {}, time(worker.lastPollAt)),
              h("td", {}, worker.tasksInHand))))));
    } catch (error) {
      // A server without GET /workers (404) shows the queues alone.
      if (!(error instanceof ApiError) || error.status !== 404) throw error;
      workers.replaceChildren();
    }
  };
  await every(REFRESH_SECONDS, refresh, isCurrent);
}
