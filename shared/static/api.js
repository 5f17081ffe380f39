// api.js: JSON over fetch, the one way every page asks its server (issue 17: there were three
// wrappers, and pages that called fetch bare and read the error three ways).
//
// Every app answers an error with one shape (shared/errors.py): {"status_code", "detail",
// "extra"?} as JSON. api() returns the parsed body of a success and throws an ApiError with the
// server's detail otherwise, so a page shows what the server said, not "HTTP 422".

export class ApiError extends Error {
  constructor(status, detail, { retryAfter = 0, extra = null, body = null } = {}) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter; // seconds, from Retry-After (429, 503); 0 when not given
    this.extra = extra; // the error's "extra" (a policy rule, the fields that failed...), or null
    this.body = body; // the whole parsed body, for the rare page that wants more
  }
}

/**
 * `api(method, url, body?, { raw, headers })`: the parsed JSON answer (null for an empty one).
 *
 * `body` goes out as JSON (Content-Type: application/json, which the servers require of a JSON
 * write), or as it is with `raw: true` (a File, say: give its Content-Type in `headers`).
 * Same-origin only: cookies go along, and the browser's Origin header is what the servers check.
 * Throws ApiError for an HTTP error, and TypeError when the network failed (no answer at all).
 */
export async function api(method, url, body, { raw = false, headers = {} } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    if (raw) {
      init.body = body;
    } else {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text; // not JSON (a proxy's error page): kept as text
  }
  if (!res.ok) {
    const shaped = data !== null && typeof data === "object";
    const detail = (shaped && typeof data.detail === "string" && data.detail) || res.statusText || `HTTP ${res.status}`;
    throw new ApiError(res.status, detail, {
      retryAfter: Number(res.headers.get("Retry-After")) || 0,
      extra: (shaped && data.extra) || null,
      body: data,
    });
  }
  return data;
}

/** What to tell a person about a failed call: the server's detail, or that it did not answer. */
export function errorText(err) {
  if (err instanceof ApiError) return err.detail;
  if (err instanceof TypeError) return `cannot reach the server (${err.message})`;
  return (err && err.message) || String(err);
}
