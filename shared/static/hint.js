// hint.js: "this browser has signed in here before", kept in localStorage next to an HttpOnly
// session cookie that scripts cannot see. Without it a page shows its sign-in form at once
// instead of asking the server "who am I?" and logging a 401 in the console of every first
// visit (issue 18). The server still decides: a hint whose cookie has gone gets one 401, and is
// dropped. Storage refused (a sandbox, some private modes): "maybe", and the page asks.

export function signInHint(key) {
  const get = () => {
    try {
      return localStorage.getItem(key) !== null;
    } catch {
      return true;
    }
  };
  const set = (on) => {
    try {
      if (on) localStorage.setItem(key, "1");
      else localStorage.removeItem(key);
    } catch {
      // not remembered: the next visit asks the server
    }
  };
  return { maybe: get, set };
}
