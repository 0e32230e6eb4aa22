// A relay-only WebRTC call between two RTCPeerConnections in one page, for
// tests/interop/test_turn_chromium.py (run with Selenium's execute_async_script).
//
// arguments[0]: {url, username, credential, message, deadlineMs}
// arguments[last]: the WebDriver callback; it gets one JSON-able object:
//   {ok, error, received, echo, pairs: [caller, callee], candidates, events}
// where each pair is the selected candidate pair from getStats() as
//   {localType, remoteType, relayProtocol, local, remote, state} (or null).
//
// Both connections use iceTransportPolicy "relay", so they gather only relayed
// candidates from the one TURN server; offers, answers and candidates are passed
// in-page. The caller opens a data channel and sends `message`; the callee answers
// "echo:" + message on the same channel. The page closes nothing: the test reads the
// relay's state while the call is up, then calls window.trelayHangUp().
const config = arguments[0];
const done = arguments[arguments.length - 1];
const events = [];
const candidates = { caller: [], callee: [] };
let finished = false;
let received = null;

function finish(result) {
  if (finished) return;
  finished = true;
  result.events = events;
  result.candidates = candidates;
  done(result);
}

async function selectedPair(pc) {
  const report = await pc.getStats();
  let pair = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      pair = report.get(s.selectedCandidatePairId) || null;
    }
  });
  if (pair === null) {
    // Older stats: no selectedCandidatePairId; take the nominated succeeded pair.
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
    });
  }
  if (pair === null) return null;
  const local = report.get(pair.localCandidateId);
  const remote = report.get(pair.remoteCandidateId);
  return {
    localType: local.candidateType,
    remoteType: remote.candidateType,
    relayProtocol: local.relayProtocol === undefined ? null : local.relayProtocol,
    local: `${local.address}:${local.port}`,
    remote: `${remote.address}:${remote.port}`,
    state: pair.state,
  };
}

async function diagnose(error) {
  const pairs = [];
  for (const pc of window.trelayPeers || []) pairs.push(await selectedPair(pc).catch(() => null));
  finish({ ok: false, error: String(error), received, echo: null, pairs });
}

// Candidates that arrive before the other side has a remote description wait here.
function wire(from, to, name) {
  const pending = [];
  from.onicecandidate = (event) => {
    if (!event.candidate) return;
    candidates[name].push(event.candidate.candidate);
    if (to.remoteDescription) to.addIceCandidate(event.candidate).catch(diagnose);
    else pending.push(event.candidate);
  };
  from.onicecandidateerror = (event) => {
    events.push(`${name} candidate error ${event.errorCode} ${event.errorText} ${event.url}`);
  };
  from.oniceconnectionstatechange = () => events.push(`${name} ice ${from.iceConnectionState}`);
  return async () => {
    for (const candidate of pending.splice(0)) await to.addIceCandidate(candidate);
  };
}

async function call() {
  const rtcConfig = {
    iceServers: [{ urls: config.url, username: config.username, credential: config.credential }],
    iceTransportPolicy: "relay",
  };
  const caller = new RTCPeerConnection(rtcConfig);
  const callee = new RTCPeerConnection(rtcConfig);
  window.trelayPeers = [caller, callee];
  window.trelayHangUp = () => { caller.close(); callee.close(); };
  const flushToCallee = wire(caller, callee, "caller");
  const flushToCaller = wire(callee, caller, "callee");

  callee.ondatachannel = (event) => {
    const channel = event.channel;
    channel.onmessage = (message) => {
      received = message.data;
      channel.send("echo:" + message.data);
    };
  };
  const channel = caller.createDataChannel("trelay");
  const opened = new Promise((resolve) => { channel.onopen = resolve; });
  const echoed = new Promise((resolve) => { channel.onmessage = (m) => resolve(m.data); });

  await caller.setLocalDescription();
  await callee.setRemoteDescription(caller.localDescription);
  await flushToCallee();
  await callee.setLocalDescription();
  await caller.setRemoteDescription(callee.localDescription);
  await flushToCaller();

  await opened;
  channel.send(config.message);
  const echo = await echoed;
  const pairs = [await selectedPair(caller), await selectedPair(callee)];
  finish({ ok: true, error: null, received, echo, pairs });
}

// Answer before Selenium's script timeout, with what getStats() saw so far.
setTimeout(() => diagnose("no echo before the deadline"), config.deadlineMs);
call().catch(diagnose);
