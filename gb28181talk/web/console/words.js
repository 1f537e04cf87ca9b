// The API's codes, the devices' answers, the sessions' end reasons and the browser's
// microphone errors, in plain words an operator can act on.

import { ApiError } from "./api.js";

function sentence(text) {
  const trimmed = String(text || "").trim();
  if (!trimmed) {
    return "";
  }
  const first = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

/** What went wrong, for an error thrown while `doing` ("broadcast", "talk", ...). */
export function explain(error, doing = "call") {
  if (error instanceof ApiError) {
    const msg = error.message;
    if (error.code === -100 && error.status === 401) {
      return "The API secret is missing or wrong: enter it again above.";
    }
    if (error.code === -100 && error.status === 403) {
      return sentence(`The service refused this page: ${msg}`);
    }
    if (error.code === -400 && error.status === 503) {
      return "No free talk port: the port pool is exhausted (every port of the service's "
        + "--port-range is in use). End a session, or give the service a wider --port-range.";
    }
    if (error.code === -400) {
      return sentence(`The talk port is busy: ${msg}`);
    }
    if (error.status === 404 && String(error.path).startsWith("/api/webrtc")
        && msg.startsWith("nothing at")) {
      return "This service has no WebRTC endpoint (/api/webrtc): it is older than the "
        + "console; upgrade it.";
    }
    if (error.status === 503 && msg.includes("--sip")) {
      return sentence(`The ${doing} needs SIP: ${msg}`);
    }
    if (error.status === 504) {
      return sentence(`The device did not answer the ${doing} in time: ${msg}`);
    }
    if (error.status === 409 && doing === "talk") {
      return sentence(`The device is busy: ${msg}`);
    }
    if (error.status === 502) {
      return sentence(`The device refused the ${doing}: ${msg}`);
    }
    if (error.code === null) {
      return sentence(msg);
    }
    return sentence(msg);
  }
  if (error && (error.name === "NotAllowedError" || error.name === "SecurityError")) {
    return "The microphone is blocked: allow it for this page (the icon left of the address "
      + "bar, or the browser's site settings), then press again.";
  }
  if (error && (error.name === "NotFoundError" || error.name === "OverconstrainedError")) {
    return "No microphone found: plug one in (or enable it in the system settings) and "
      + "press again.";
  }
  if (error && error.name === "NotReadableError") {
    return "The microphone cannot be opened: another program may hold it.";
  }
  return sentence(error && error.message ? error.message : String(error));
}

/** A device's part of a broadcast that failed, in words (null when it is OK). */
export function broadcastRefusal(result) {
  if (result.result === "OK") {
    return null;
  }
  const device = result.device_id;
  const reason = result.reason || "no reason given";
  if (/pool .*exhausted|could not bind any of the .* pool ports/.test(reason)) {
    return `No free talk port for device ${device}: the port pool is exhausted (every port `
      + "of the service's --port-range is in use). End a session, or give the service a wider "
      + "--port-range.";
  }
  switch (result.status) {
    case 404:
      return `Device ${device} is not registered or not online.`;
    case 486:
    case 409:
      return sentence(`Device ${device} is busy: ${reason}`);
    case 408:
    case 504:
      return sentence(`Device ${device} did not answer the broadcast in time: ${reason}`);
    default:
      return sentence(`Device ${device} refused the broadcast: ${reason}`);
  }
}

/** Why a session that the console started ended, from what the console last saw of it. */
export function sessionGone(device, lastState) {
  const who = device ? `Device ${device}` : "The device";
  if (lastState === "listening") {
    return `${who} did not connect within the service's wait time (5 s unless the service `
      + "runs with another --wait-timeout), so the talk port was closed.";
  }
  return `${who}: the call ended (the device hung up or its connection closed).`;
}

/** The note shown when the page cannot have the microphone (plain HTTP, not localhost). */
export function insecureNote(location) {
  return `This page is served over plain HTTP from ${location.host}: browsers give the `
    + "microphone only to HTTPS pages or to pages from localhost. Serve the API over HTTPS "
    + "(--api ssl:...), or open it through http://localhost (e.g. an SSH tunnel). Listing "
    + "devices still works.";
}
