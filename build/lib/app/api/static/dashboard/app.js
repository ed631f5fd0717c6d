// The dashboard's shell: the header (token, jump to a run) and a hash router over the views.
import { setToken, token } from "./api.js";
import { showError } from "./dom.js";
import { showDefinitions } from "./definitions.js";
import { showQueues } from "./queues.js";
import { showRun } from "./run.js";
import { showRuns } from "./runs.js";

let generation = 0;

function route() {
  generation += 1;
  const mine = generation;
  const isCurrent = () => mine === generation;
  showError(null);
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const view = document.getElementById("view");
  view.replaceChildren();
  const section = parts[0] || "runs";
  for (const link of document.querySelectorAll("nav a")) {
    const active = link.dataset.view === section || (section === "run" && link.dataset.view === "runs")
      || (section === "definition" && link.dataset.view === "definitions");
    link.classList.toggle("active", active);
  }
  const shown = {
    runs: () => showRuns(view, params, isCurrent),
    run: () => showRun(view, parts[1], isCurrent),
    definitions: () => showDefinitions(view, null, params, isCurrent),
    definition: () => showDefinitions(view, parts[1], params, isCurrent),
    queues: () => showQueues(view, isCurrent),
  }[section];
  (shown || (() => showRuns(view, params, isCurrent)))().catch(showError);
}

document.getElementById("token").value = token();
document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken(document.getElementById("token").value.trim());
  route();
});
document.getElementById("jump").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = document.getElementById("jump-id").value.trim();
  if (id) location.hash = `#/run/${encodeURIComponent(id)}`;
});
window.addEventListener("hashchange", route);
route();
