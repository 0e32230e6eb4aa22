"""The node's data plane: every relay socket in one epoll set, drained by one trio task.

Owns how peer datagrams wake the node (design §4, "fewer wakeups"). A relay socket (and
each channel's connected socket) is registered once, level-triggered, in an epoll set
of its own (`select.epoll`) with the batch reader that drains it (a
`trelay.node.data_path.PeerReader`). One task waits for the set's descriptor to be
readable (`trio.lowlevel.wait_readable` on the epoll fd: readable while any socket in
it is), then drains every ready socket in one pass. Compared with one task per relay
socket, a wakeup costs one trip through trio's scheduler for however many sockets are
ready, and no `epoll_ctl` per socket per datagram (trio re-arms a socket it waits on
each time); and an allocation starts no task at all.

Invariants:
- `add` registers a socket with its reader (a second `add` of the same socket replaces
  the reader: RFC 8016 mobility rebuilds it); `discard` forgets it and must come before
  the socket is closed, so a descriptor number reused by a new socket never reaches the
  old reader. Ending an allocation discards and closes its sockets at once (design §4:
  the port is free before anything else runs), as its cancel scope did before.
- A pass reads at most `BATCH_SIZE` datagrams per ready socket; if any socket filled
  its batch, the task yields with a checkpoint and polls again (level-triggered: what
  is still queued is reported again), so the plane cannot starve the node's other tasks
  and one busy socket cannot starve the others.
- A reader whose socket was closed under it (EBADF) is forgotten; the plane goes on.
- When the task ends (the node's nursery is cancelled), every socket still registered
  is closed, as the per-socket tasks' `with sock:` did, and the epoll set with them.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket

import trio

from trelay.node.datagram_batch import BATCH_SIZE, DatagramBatch

# Events taken from the epoll set per poll: every ready socket is drained in one pass
# unless more than this many are ready; the rest come at the next poll.
MAX_EVENTS = 1024


class DataPlane:
    """Relay sockets and their readers, drained by `run` (one task per node)."""

    __slots__ = ("_epoll", "_readers", "_running")

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._readers: dict[int, tuple[socket.socket, DatagramBatch]] = {}
        self._running = False

    def __len__(self) -> int:
        return len(self._readers)

    @property
    def running(self) -> bool:
        """True once `run` has started (the node starts it with its first relay)."""
        return self._running

    def add(self, sock: socket.socket, reader: DatagramBatch) -> None:
        """Drain `sock` with `reader` whenever it is readable (replacing its reader)."""
        fd = sock.fileno()
        known = fd in self._readers
        self._readers[fd] = (sock, reader)
        if not known:
            self._epoll.register(fd, select.EPOLLIN)

    def discard(self, sock: socket.socket) -> None:
        """Forget `sock` (before closing it); a no-op for a socket not registered."""
        fd = sock.fileno()
        entry = self._readers.get(fd)
        if entry is None or entry[0] is not sock:
            return
        del self._readers[fd]
        with contextlib.suppress(OSError):  # closed already: the kernel removed it
            self._epoll.unregister(fd)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drain ready sockets until cancelled; then close every registered socket."""
        self._running = True
        task_status.started()
        epoll, readers = self._epoll, self._readers
        poll = epoll.poll
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                # Bounded: each round ends or yields; a full round means more is queued.
                while self._drain(poll(0, MAX_EVENTS), readers):
                    await trio.lowlevel.checkpoint()
        finally:
            self._running = False
            for sock, _ in readers.values():
                sock.close()
            readers.clear()
            epoll.close()

    def _drain(
        self,
        events: list[tuple[int, int]],
        readers: dict[int, tuple[socket.socket, DatagramBatch]],
    ) -> bool:
        """One batch from each ready socket; True if any had more than a batch queued."""
        more = False
        for fd, _ in events:
            entry = readers.get(fd)  # looked up now: an earlier batch may have ended it
            if entry is None:
                continue
            try:
                if entry[1]() == BATCH_SIZE:
                    more = True
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise
                readers.pop(fd, None)  # closed without `discard`: nothing left to read
        return more
