// retry.js: "keep trying" for sends that must not be lost (the calls themselves: shared api.js).
//
// Every write the chat makes carries its own idempotency key (client_msg_id), so retrying after
// a network error or a server restart is always safe: the server answers a retry with the
// message it already stored.
import { ApiError } from "./api.js";

/** Is this failure worth retrying? Network errors, 429 (rate limit) and 5xx (restarting). */
export function retryable(err) {
  return !(err instanceof ApiError) || err.status === 429 || err.status >= 500;
}

const waiting = new Set(); // resolvers of the pauses between retries

// Resolves after `ms`, or as soon as the browser says it is back online, or retryNow() is called.
function pause(ms) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      window.removeEventListener("online", done);
      waiting.delete(done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    window.addEventListener("online", done);
    waiting.add(done);
  });
}

/** The server is reachable again (a stream just opened): every waiting retry goes now. */
export function retryNow() {
  for (const done of [...waiting]) done();
}

/** Run `attempt()` until it succeeds or fails for good (a 4xx other than 429). */
export async function persist(attempt, { onRetry = () => {}, maxDelay = 8000 } = {}) {
  for (let n = 1; ; n += 1) {
    try {
      return await attempt();
    } catch (err) {
      if (!retryable(err)) throw err;
      onRetry(err, n);
      let delay = Math.min(maxDelay, 400 * 2 ** Math.min(n - 1, 6));
      if (err instanceof ApiError && err.retryAfter) delay = Math.max(delay, err.retryAfter * 1000);
      await pause(delay / 2 + (Math.random() * delay) / 2);
    }
  }
}

/** A random id for client_msg_id (works on plain http too, unlike crypto.randomUUID). */
export function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
