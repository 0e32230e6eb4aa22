"""The node's data plane: every datagram socket of the node in one epoll set, drained in
passes.

Owns how datagrams wake the node (design §4, "fewer wakeups"). The UDP listeners'
sockets (`trelay.node.udp_listener`), each relay socket and each channel's connected
socket are registered once, level-triggered, in an epoll set of its own
(`select.epoll`) with the batch reader that drains it (a `trelay.node.data_path`
`ClientReader` or `PeerReader`). A pass drains every ready socket. Passes run:

- while trio idles, inside trio's run loop (`trelay.node.idle_wait`): the node blocks in
  this set, with trio's own epoll in it, so a datagram costs no trip through trio's
  scheduler;
- otherwise (trio's internals are not the known ones, or another data plane of the same
  run holds the idle wait) from one task that waits for the set's descriptor to be
  readable (`trio.lowlevel.wait_readable` on the epoll fd: readable while any socket in
  it is): a wakeup costs one trip through the scheduler for however many sockets are
  ready.

Either way there is no `epoll_ctl` per socket per datagram (trio re-arms a socket it
waits on each time), and an allocation starts no task.

Invariants:
- `add` registers a socket with its reader (a second `add` of the same socket replaces
  the reader: RFC 8016 mobility rebuilds it); `discard` forgets it and must come before
  the socket is closed, so a descriptor number reused by a new socket never reaches the
  old reader. Ending an allocation discards and closes its sockets at once (design §4:
  the port is free before anything else runs), as its cancel scope did before.
- A pass reads at most `BATCH_SIZE` datagrams per ready socket, so one busy socket
  cannot starve the others; what is still queued is reported again (level-triggered).
  Neither way starves the node's other tasks: the task yields with a checkpoint after a
  pass that filled a batch, the idle wait returns as soon as trio has work.
- A *lone* socket, one whose last batch held a single datagram (the receive after it
  failed with EAGAIN), is read once per pass. At light load most sockets hold one
  datagram when they wake the node, and that failed receive (a syscall and a Python
  exception, about 1.5 µs) doubled the receives per datagram and held the batch's sends,
  which leave at its end, back by as long. What may queue behind the datagram read is
  not lost: epoll reports the socket again at the next poll (level-triggered). A lone
  socket reported again in the very next pass, within `LONE_GAP` of its read, is
  drained as a batch (a backlog, or a flow too busy to be lone); and every
  `LONE_STREAK` + 1st read of a lone socket is a batch all the same, so a backlog the
  gap does not show (passes longer than that, more ready sockets than one poll
  returns) costs at most that many single reads. A batch that reads more than one
  datagram ends the socket's lone state.
- A reader whose socket was closed under it (EBADF) is forgotten; the plane goes on.
- When the task ends (the node's nursery is cancelled), the idle wait is given back,
  every socket still registered is closed, as the per-socket tasks' `with sock:` did,
  and the epoll set with them.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import time

import trio

from trelay.node.datagram_batch import BATCH_SIZE, DatagramBatch
from trelay.node.idle_wait import MAX_EVENTS, IdleWait

# A lone socket reported again within this long of its single read is drained as a batch:
# what one pass takes, well below the round trip of any flow that is lone at a time.
LONE_GAP = 100e-6
# Single reads of a lone socket before it is drained as a batch again all the same.
LONE_STREAK = 8


class _Registered:
    """A socket of the plane, its reader, and its lone state (`DataPlane._drain`)."""

    __slots__ = ("lone_at", "lone_pass", "read", "sock", "streak")

    def __init__(self, sock: socket.socket, read: DatagramBatch) -> None:
        self.sock = sock
        self.read = read
        self.lone_pass = 0  # the pass of its last single-datagram read; 0: not lone
        self.lone_at = 0.0  # and when (time.monotonic)
        self.streak = 0  # single reads since its last batch


class DataPlane:
    """Relay sockets and their readers, drained by `run` (one task per node)."""

    __slots__ = ("_epoll", "_idle", "_passes", "_readers", "_running")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, _Registered] = {}
        self._passes = 0
        self._running = False
        self._idle: IdleWait | None = None

    def __len__(self) -> int:
        return len(self._readers)

    @property
    def running(self) -> bool:
        """True once `run` has started (the node starts it with its first socket)."""
        return self._running

    @property
    def waits_idle(self) -> bool:
        """True while passes run in trio's idle wait rather than from the task."""
        return self._idle is not None

    def add(self, sock: socket.socket, reader: DatagramBatch) -> None:
        """Drain `sock` with `reader` whenever it is readable (replacing its reader)."""
        fd = sock.fileno()
        known = fd in self._readers
        self._readers[fd] = _Registered(sock, reader)
        if not known:
            self._epoll.register(fd, select.EPOLLIN)

    def discard(self, sock: socket.socket) -> None:
        """Forget `sock` (before closing it); a no-op for a socket not registered."""
        fd = sock.fileno()
        entry = self._readers.get(fd)
        if entry is None or entry.sock is not sock:
            return
        del self._readers[fd]
        with contextlib.suppress(OSError):  # closed already: the kernel removed it
            self._epoll.unregister(fd)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drain ready sockets until cancelled; then close every registered socket."""
        self._running = True
        epoll, readers = self._epoll, self._readers
        self._idle = IdleWait.claim(epoll, self._drain)
        task_status.started()
        try:
            if self._idle is not None:
                await self._idle.ended()  # raises what a pass raised; else runs until cancelled
            poll = epoll.poll
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                # Bounded: each round ends or yields; a full round means more is queued.
                while self._drain(poll(0, MAX_EVENTS)):
                    await trio.lowlevel.checkpoint()
        finally:
            self._running = False
            if self._idle is not None:
                self._idle.release()
                self._idle = None
            for entry in readers.values():
                entry.sock.close()
            readers.clear()
            epoll.close()

    def _drain(self, events: list[tuple[int, int]]) -> bool:
        """One pass: a batch from each ready socket (one datagram from a lone one); True
        if any had more than a batch queued. Run by the task or by the idle wait
        (`IdleWait`'s `drain`)."""
        readers, more = self._readers, False
        passes = self._passes = self._passes + 1
        now = time.monotonic()
        for fd, _ in events:
            entry = readers.get(fd)  # looked up now: an earlier batch may have ended it
            if entry is None:
                continue
            try:
                if entry.lone_pass and entry.streak < LONE_STREAK:
                    back = entry.lone_pass == passes - 1 and now - entry.lone_at < LONE_GAP
                    if not back:
                        entry.streak += 1
                        entry.read(1)
                        entry.lone_pass, entry.lone_at = passes, now
                        continue
                count = entry.read()
                if count == BATCH_SIZE:
                    more = True
                if count == 1:
                    entry.lone_pass, entry.lone_at, entry.streak = passes, now, 0
                else:
                    entry.lone_pass = 0
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise
                readers.pop(fd, None)  # closed without `discard`: nothing left to read
        return more
