// A workflow's graph laid out in layers, drawn as SVG. The layout is a small Sugiyama-style
// pass written here: a depth-first walk from the root marks the edges that go back (while
// loops, goto) so that the rest is acyclic; each action's layer is its longest path from
// the root; a few barycenter sweeps order each layer to cut crossings. Back edges are
// drawn dashed around the right side.
const NODE_WIDTH = 190;
const NODE_HEIGHT = 46;
const GAP_X = 36;
const GAP_Y = 54;
const MARGIN = 24;
const SWEEPS = 4;
const SVG = "http://www.w3.org/2000/svg";

export function edgesOf(definition) {
  const edges = [];
  for (const action of definition.actions || []) {
    for (const [branch, targets] of Object.entries(action.next || {})) {
      for (const target of targets) edges.push({ from: action.id, to: target, branch });
    }
  }
  return edges;
}

export function layout(definition) {
  const actions = definition.actions || [];
  const ids = actions.map((action) => action.id);
  const edges = edgesOf(definition).filter((e) => ids.includes(e.from) && ids.includes(e.to));
  const outgoing = new Map(ids.map((id) => [id, []]));
  for (const edge of edges) outgoing.get(edge.from).push(edge);

  // Depth-first from the root (then any action not reached): an edge to an action still on
  // the walk's stack closes a loop.
  const state = new Map();
  const discovery = [];
  const visit = (id) => {
    state.set(id, "open");
    discovery.push(id);
    for (const edge of outgoing.get(id)) {
      const seen = state.get(edge.to);
      if (seen === "open") edge.back = true;
      else if (seen === undefined) visit(edge.to);
    }
    state.set(id, "done");
  };
  if (ids.includes(definition.rootAction)) visit(definition.rootAction);
  for (const id of ids) if (!state.has(id)) visit(id);

  // Longest path from the root over the forward edges, in topological order.
  const forward = edges.filter((edge) => !edge.back);
  const indegree = new Map(ids.map((id) => [id, 0]));
  for (const edge of forward) indegree.set(edge.to, indegree.get(edge.to) + 1);
  const layer = new Map(ids.map((id) => [id, 0]));
  const ready = discovery.filter((id) => indegree.get(id) === 0);
  while (ready.length) {
    const id = ready.shift();
    for (const edge of outgoing.get(id)) {
      if (edge.back) continue;
      layer.set(edge.to, Math.max(layer.get(edge.to), layer.get(id) + 1));
      indegree.set(edge.to, indegree.get(edge.to) - 1);
      if (indegree.get(edge.to) === 0) ready.push(edge.to);
    }
  }

  const layers = [];
  for (const id of discovery) {
    const index = layer.get(id);
    (layers[index] ||= []).push(id);
  }
  const position = new Map();
  const reindex = () => layers.forEach((row) => row.forEach((id, i) => position.set(id, i)));
  reindex();
  const neighbours = (id, up) =>
    forward.filter((e) => (up ? e.to === id : e.from === id)).map((e) => (up ? e.from : e.to));
  for (let sweep = 0; sweep < SWEEPS; sweep++) {
    const up = sweep % 2 === 0;
    const order = up ? layers.slice(1) : layers.slice(0, -1).reverse();
    for (const row of order) {
      const weight = new Map(
        row.map((id) => {
          const near = neighbours(id, up).map((n) => position.get(n));
          const mean = near.length ? near.reduce((a, b) => a + b, 0) / near.length : position.get(id);
          return [id, mean];
        }),
      );
      row.sort((a, b) => weight.get(a) - weight.get(b));
      row.forEach((id, i) => position.set(id, i));
    }
  }

  const widest = Math.max(1, ...layers.map((row) => row.length));
  const width = widest * (NODE_WIDTH + GAP_X) - GAP_X + 2 * MARGIN;
  const height = layers.length * (NODE_HEIGHT + GAP_Y) - GAP_Y + 2 * MARGIN;
  const nodes = new Map();
  layers.forEach((row, depth) => {
    const offset = ((widest - row.length) * (NODE_WIDTH + GAP_X)) / 2;
    row.forEach((id, i) => {
      nodes.set(id, {
        id,
        x: MARGIN + offset + i * (NODE_WIDTH + GAP_X),
        y: MARGIN + depth * (NODE_HEIGHT + GAP_Y),
      });
    });
  });
  return { nodes, edges, width, height };
}

function element(name, attributes, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function label(action) {
  if (action.type === "user") return action.name;
  if (action.name === "subWorkflow") return `subWorkflow ${action.workflow}`;
  if (action.name === "forEach" && action.body) return `forEach: ${action.body.name}`;
  return action.name;
}

// ``states``: action id -> {status, executions, attempts} (a run's ``actions``), or nothing
// for a definition alone. ``onSelect(id)`` is called when an action is clicked.
export function drawDag(container, definition, states = {}, onSelect = null, selected = null) {
  const { nodes, edges, width: laidWidth, height } = layout(definition);
  // Each back edge gets its own vertical lane right of the actions its loop spans.
  const backLanes = new Map();
  edges.filter((edge) => edge.back).forEach((edge, index) => {
    const top = nodes.get(edge.to).y;
    const bottom = nodes.get(edge.from).y;
    const spanned = [...nodes.values()].filter((n) => n.y >= top && n.y <= bottom);
    backLanes.set(edge, Math.max(...spanned.map((n) => n.x + NODE_WIDTH)) + 16 + 10 * index);
  });
  const width = Math.max(laidWidth, ...[...backLanes.values()].map((lane) => lane + 40));
  const svg = element("svg", {
    class: "dag",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
  });
  const defs = element("defs", {}, svg);
  const marker = element(
    "marker",
    { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
    defs,
  );
  element("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }, marker);

  for (const edge of edges) {
    const from = nodes.get(edge.from);
    const to = nodes.get(edge.to);
    let d;
    let labelAt;
    if (edge.back) {
      // Down into the gap under the source's layer, out past every action of the layers
      // the loop spans, up into the gap above the target's layer, and in from above.
      const lane = backLanes.get(edge);
      const below = from.y + NODE_HEIGHT + GAP_Y / 3;
      const above = to.y - GAP_Y / 3;
      const sx = from.x + NODE_WIDTH * 0.75;
      const tx = to.x + NODE_WIDTH * 0.75;
      d = `M${sx},${from.y + NODE_HEIGHT} L${sx},${below} L${lane},${below} L${lane},${above} L${tx},${above} L${tx},${to.y}`;
      labelAt = [lane + 4, (below + above) / 2];
    } else {
      const x1 = from.x + NODE_WIDTH / 2;
      const y1 = from.y + NODE_HEIGHT;
      const x2 = to.x + NODE_WIDTH / 2;
      const y2 = to.y;
      const bend = (y2 - y1) / 2;
      d = `M${x1},${y1} C${x1},${y1 + bend} ${x2},${y2 - bend} ${x2},${y2}`;
      labelAt = [(x1 + x2) / 2 + 4, (y1 + y2) / 2];
    }
    element("path", { d, class: edge.back ? "edge back" : "edge", "marker-end": "url(#arrow)" }, svg);
    if (edge.branch !== "default") {
      const text = element("text", { x: labelAt[0], y: labelAt[1], class: "edge-label" }, svg);
      text.textContent = edge.branch;
    }
  }

  for (const action of definition.actions || []) {
    const place = nodes.get(action.id);
    const run = states[String(action.id)];
    const status = run ? run.status.toLowerCase() : "none";
    const group = element(
      "g",
      {
        class: `node state-${status}${selected === action.id ? " selected" : ""}`,
        "data-action-id": action.id,
        "data-status": run ? run.status : "",
        transform: `translate(${place.x},${place.y})`,
        tabindex: 0,
      },
      svg,
    );
    element("rect", { width: NODE_WIDTH, height: NODE_HEIGHT, rx: 7 }, group);
    const title = element("text", { x: 10, y: 19, class: "node-title" }, group);
    title.textContent = `${action.id} · ${label(action)}`.slice(0, 26);
    const detail = element("text", { x: 10, y: 36, class: "node-detail" }, group);
    const parts = [action.type === "user" ? "user" : "system"];
    if (run) {
      parts.push(run.status);
      if (run.executions > 1) parts.push(`×${run.executions}`);
      if (run.attempts > 1) parts.push(`attempt ${run.attempts}`);
    }
    detail.textContent = parts.join(" · ");
    const tip = element("title", {}, group);
    tip.textContent = `${action.id}: ${label(action)}`;
    if (onSelect) {
      group.addEventListener("click", () => onSelect(action.id));
      group.addEventListener("keydown", (event) => event.key === "Enter" && onSelect(action.id));
    }
  }
  container.replaceChildren(svg);
}
