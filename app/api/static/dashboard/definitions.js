// Definitions: every workflow with its versions; one version's DAG and JSON.
import { get } from "./api.js";
import { drawDag } from "./dag.js";
import { h, json } from "./dom.js";

export async function showDefinitions(view, name, params, isCurrent) {
  const workflows = await get("/metadata/workflow");
  if (!isCurrent()) return;
  const list = h("ul", { class: "definitions" },
    workflows.map((workflow) =>
      h("li", {}, h("a", { href: `#/definition/${encodeURIComponent(workflow.name)}` }, workflow.name),
        ` · versions `,
        Array.from({ length: workflow.latestVersion }, (_, i) => i + 1).map((version) => [
          h("a", { href: `#/definition/${encodeURIComponent(workflow.name)}?version=${version}` }, `v${version}`), " "]))));
  const side = h("aside", {}, h("h2", {}, "Workflows"), workflows.length ? list : h("p", { class: "muted" }, "None registered."));
  if (!name) {
    view.replaceChildren(h("h1", {}, "Definitions"), side);
    return;
  }
  const version = params.get("version");
  const definition = await get(`/metadata/workflow/${encodeURIComponent(name)}${version ? `?version=${version}` : ""}`);
  if (!isCurrent()) return;
  const dag = h("div", { id: "dag", class: "dag-box" });
  drawDag(dag, definition);
  view.replaceChildren(
    h("h1", {}, `${definition.name} v${definition.version}`),
    h("div", { class: "split" },
      h("div", {}, dag,
        h("p", {}, h("a", { href: `#/runs?name=${encodeURIComponent(name)}&version=${definition.version}` }, "Runs of this version"))),
      side),
    h("h2", {}, "JSON"),
    json(definition),
  );
}
