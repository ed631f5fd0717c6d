// The JSON API, called with the user's bearer token (kept in sessionStorage for this tab).
const TOKEN_KEY = "orchy.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

const MEANINGS = {
  401: "Not authenticated: give a valid token in the header",
  403: "Not allowed for this token's role",
  404: "Not found",
  409: "Not possible in the run's current state",
  413: "Too large",
  422: "Invalid input",
  503: "The server cannot reach Redis",
};

export class ApiError extends Error {
  constructor(status, detail) {
    const meaning = MEANINGS[status] || `HTTP ${status}`;
    super(`${meaning} (${status}): ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

export async function call(method, path, body) {
  const headers = {};
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, (parsed && parsed.error) || text || response.statusText);
  }
  return parsed;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);
