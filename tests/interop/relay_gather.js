// Relay candidates gathered by one RTCPeerConnection, for
// tests/interop/test_overflow_chromium.py (run with Selenium's execute_async_script).
//
// arguments[0]: {url, username, credential, deadlineMs}
// arguments[last]: the WebDriver callback; it gets one JSON-able object:
//   {complete, candidates: [candidate lines], errors: [{code, text, url}]}
// `complete` is true when gathering ended (iceGatheringState "complete"), false when
// the deadline came first. iceTransportPolicy "relay" with the one TURN server: only
// relayed candidates, and an allocation that fails is an icecandidateerror.
const config = arguments[0];
const done = arguments[arguments.length - 1];
const candidates = [];
const errors = [];
let finished = false;

function finish(complete) {
  if (finished) return;
  finished = true;
  pc.close();
  done({ complete, candidates, errors });
}

const pc = new RTCPeerConnection({
  iceServers: [{ urls: config.url, username: config.username, credential: config.credential }],
  iceTransportPolicy: "relay",
});
pc.onicecandidate = (event) => {
  if (event.candidate) candidates.push(event.candidate.candidate);
};
pc.onicecandidateerror = (event) => {
  errors.push({ code: event.errorCode, text: event.errorText, url: event.url });
};
pc.onicegatheringstatechange = () => {
  if (pc.iceGatheringState === "complete") finish(true);
};
pc.createDataChannel("trelay");
setTimeout(() => finish(false), config.deadlineMs);
pc.setLocalDescription().catch((error) => {
  errors.push({ code: null, text: String(error), url: null });
  finish(false);
});
