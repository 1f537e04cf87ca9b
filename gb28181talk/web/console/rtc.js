// WebRTC peers with the service: one POST of the SDP offer (ICE candidates gathered in it,
// no trickle), the answer from the reply's JSON; DELETE /api/webrtc/<id> ends the peer.

import { api, query } from "./api.js";

const GATHER_MS = 3000;

function gathered(pc) {
  if (pc.iceGatheringState === "complete") {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHER_MS); // the host candidates come at once; do not wait for more
  });
}

/** A peer with the service: kind "push" (send `track`) or "play" (receive), for app/stream. */
export async function openPeer(kind, app, stream, track = null) {
  const pc = new RTCPeerConnection({ iceServers: [] });
  if (kind === "push") {
    pc.addTransceiver(track, { direction: "sendonly" });
  } else {
    pc.addTransceiver("audio", { direction: "recvonly" });
  }
  let reply;
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    reply = await api("POST", `/api/webrtc/${kind}?${query({ app, stream })}`,
                      { sdp: pc.localDescription.sdp });
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
  } catch (error) {
    pc.close();
    if (reply && reply.id) {
      api("DELETE", `/api/webrtc/${encodeURIComponent(reply.id)}`).catch(() => {});
    }
    throw error;
  }
  const id = reply.id;
  let closed = false;
  return {
    pc,
    id,
    async close() {
      if (closed) {
        return;
      }
      closed = true;
      pc.close();
      try {
        await api("DELETE", `/api/webrtc/${encodeURIComponent(id)}`);
      } catch (error) {
        // ended already (the service frees a peer that went away)
      }
    },
  };
}

/** Resolves once the peer's connection is up; rejects if it fails or takes over `ms`. */
export function connected(pc, ms = 10000) {
  if (pc.connectionState === "connected") {
    return Promise.resolve();
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      pc.removeEventListener("connectionstatechange", check);
      reject(new Error(`the WebRTC connection to the service did not come up within `
        + `${ms / 1000} s: a firewall between this browser and the service, or an address `
        + "the browser cannot reach (the service's --webrtc-advertise)"));
    }, ms);
    function check() {
      if (pc.connectionState === "connected") {
        clearTimeout(timer);
        pc.removeEventListener("connectionstatechange", check);
        resolve();
      } else if (pc.connectionState === "failed" || pc.connectionState === "closed") {
        clearTimeout(timer);
        pc.removeEventListener("connectionstatechange", check);
        reject(new Error(`the WebRTC connection to the service ${pc.connectionState}`));
      }
    }
    pc.addEventListener("connectionstatechange", check);
  });
}

/** The first remote audio track of a playing peer, as a MediaStream (waits up to `ms`). */
export function remoteAudio(pc, ms = 10000) {
  const receivers = pc.getReceivers().filter((r) => r.track && r.track.kind === "audio");
  if (receivers.length) {
    return Promise.resolve(new MediaStream([receivers[0].track]));
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the service sent no audio track")), ms);
    pc.addEventListener("track", (event) => {
      clearTimeout(timer);
      resolve(event.streams[0] || new MediaStream([event.track]));
    }, { once: true });
  });
}
