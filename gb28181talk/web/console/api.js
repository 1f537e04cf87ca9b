// The service's JSON API from the page: the secret (kept in this tab's sessionStorage),
// one fetch per call, and refusals as ApiError (the API's code, HTTP status and message).

const SECRET_KEY = "gb28181talk.secret";
let leaving = false;

/** The page is going away: later calls must outlive it (fetch's keepalive). */
export function pageLeaving() {
  leaving = true;
}

/** A refusal of the API: {"code": non-zero, "msg"}, or no answer at all (code null). */
export class ApiError extends Error {
  constructor(code, status, msg, path) {
    super(msg);
    this.name = "ApiError";
    this.code = code;
    this.status = status;
    this.path = path;
  }
}

export function secret() {
  return sessionStorage.getItem(SECRET_KEY) || "";
}

export function setSecret(value) {
  if (value) {
    sessionStorage.setItem(SECRET_KEY, value);
  } else {
    sessionStorage.removeItem(SECRET_KEY);
  }
}

/**
 * One API call. options.json: a JSON body; options.sdp: an SDP body (application/sdp).
 * Resolves with the reply (code 0); rejects with ApiError.
 */
export async function api(method, path, options = {}) {
  const headers = { Accept: "application/json" };
  const token = secret();
  if (token) {
    headers.Authorization = `Bearer ${token}`;
  }
  let body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  } else if (options.sdp !== undefined) {
    headers["Content-Type"] = "application/sdp";
    body = options.sdp;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store",
                                   credentials: "omit", redirect: "error",
                                   keepalive: leaving });
  } catch (error) {
    throw new ApiError(null, 0, "the service does not answer (is it running, is the "
                       + "network up?)", path);
  }
  let reply;
  try {
    reply = await response.json();
  } catch (error) {
    throw new ApiError(null, response.status,
                       `the service answered HTTP ${response.status} without JSON`, path);
  }
  if (reply.code !== 0) {
    throw new ApiError(reply.code, response.status, reply.msg || "refused", path);
  }
  return reply;
}

/** A query string of the given names and values. */
export function query(values) {
  return new URLSearchParams(values).toString();
}
