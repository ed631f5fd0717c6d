// Small DOM helpers: elements built from data, never from HTML strings (no injection).
export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function statusBadge(status) {
  return h("span", { class: `badge state-${String(status).toLowerCase()}` }, status);
}

export function time(iso) {
  if (!iso) return "";
  return iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "");
}

export function showError(error) {
  const banner = document.getElementById("error");
  if (!error) {
    banner.hidden = true;
    banner.textContent = "";
    return;
  }
  banner.textContent = error.message || String(error);
  banner.hidden = false;
}

// Runs ``refresh`` now and every ``seconds`` while the view that started it is shown.
export function every(seconds, refresh, isCurrent) {
  const tick = async () => {
    if (!isCurrent()) return;
    try {
      await refresh();
    } catch (error) {
      showError(error);
    }
    if (isCurrent()) setTimeout(tick, seconds * 1000);
  };
  return tick();
}
