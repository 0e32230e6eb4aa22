/*
 * loadgen.c: the C load generator and UDP echo peer of benchmarks/relay_vs_coturn.py.
 *
 * Compiled at benchmark time with the machine's cc (never committed as a binary):
 *     cc -O2 -o loadgen benchmarks/loadgen.c
 *
 * Two modes, one binary, both built on batched syscalls (recvmmsg/sendmmsg) so that a
 * datagram costs them the kernel's per-datagram work and little else: the relay under
 * test, not this program, must be the limit (issue 13, Deliver 1).
 *
 *   loadgen peer [--seconds T] [--gso]
 *       A UDP echo peer on 127.0.0.1:0: every datagram goes back to where it came from
 *       (the relayed address), so the relay carries both directions. Prints {"port":P}
 *       once bound; then each line read on stdin is answered with one line of counters
 *       and the process's own CPU time (getrusage). Ends at stdin EOF or after T s.
 *       --gso: consecutive echoes of one batch to one address with one size leave as
 *       one message with UDP_SEGMENT (see "GSO" below).
 *
 *   loadgen client --fds LIST --size S [--inflight K | --rate R] [--channel C]
 *                  [--warmup W] [--duration D] [--drain X] [--loss-timeout L] [--gso]
 *       LIST ("3,4,7-9") are inherited UDP sockets, each connected to the TURN server
 *       with channel C (default 0x4000) bound to the echo peer (the Python side did the
 *       Allocate and ChannelBind, RFC 8656 §7 and §11). Each socket is one flow and
 *       sends ChannelData (§12.4) with an S-byte payload:
 *       - closed loop (--inflight K): K datagrams in flight per flow; each one that
 *         comes back is replaced at once. A flow that hears nothing for L ms (default
 *         250) counts a timeout and starts a new epoch of K (replies of older epochs are
 *         counted, not replaced), so a lost datagram does not shrink the window forever.
 *       - paced (--rate R): R datagrams per second per flow, flows staggered evenly
 *         across the interval (an "audio" fleet: 50/s is one 20 ms frame each).
 *       After W s of warm-up it prints {"event":"start",...}, after D more s
 *       {"event":"end",...} with what the window measured (sent, received, round-trip
 *       percentiles in µs, its own CPU time), then stops sending, keeps receiving for
 *       X s and prints {"event":"done",...} with the run's totals (lost = sent - received).
 *       --gso: what a flow sends at once (its window, the replacements of a batch of
 *       replies) leaves as one message with UDP_SEGMENT (see "GSO" below).
 *
 * GSO (--gso): a run of equal-size datagrams to one destination leaves in one message
 * carrying a UDP_SEGMENT control message (SOL_UDP 17, option 103, the segment size as a
 * u16), at most GSO_SEGMENTS datagrams and GSO_BYTES bytes each; the messages of a batch
 * still go in one sendmmsg. A burst of one flow then travels as one buffer, as a NIC
 * with GRO presents a burst it received: a receiving socket with UDP_GRO gets it whole
 * (the segment size in a control message), any other socket gets it cut into the
 * datagrams. On loopback that is the only way a receiver sees a coalesced burst, and it
 * is the same for every server under test. If the kernel refuses GSO (EIO: no checksum
 * offload; EINVAL, ENOPROTOOPT, EOPNOTSUPP, EMSGSIZE), the program falls back to one
 * datagram per message for good and counts it ("gso_fallbacks"); "gso_runs" counts the
 * messages sent with UDP_SEGMENT.
 *
 * Payload: flow index (u32), epoch (u32), send time in ns (u64), then zeros. Round trips
 * go into a 1 µs histogram (to 200 ms; beyond that into the last bucket).
 * Bounded: every wait has a timeout and the run ends by itself (peer: T s; client:
 * W + D + X s); every failed syscall that is not EAGAIN ends the program with a message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define BATCH 64
#define BUFSIZE 2048
#define HIST 200000 /* µs buckets */
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103 /* <linux/udp.h> */
#endif
#define GSO_SEGMENTS 64 /* the kernel's UDP_MAX_SEGMENTS before Linux 6.x raised it */
#define GSO_BYTES 65000 /* a UDP datagram's 64 KiB less the headers */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void cpu_times(double *user, double *sys) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    *sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void set_buffers(int fd, int bytes) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
}

/* Point one mmsghdr at one buffer (its sender's address into `from`, when not NULL). */
static void point_at(struct mmsghdr *msg, struct iovec *iov, char *buf, size_t len,
                     struct sockaddr_in *from) {
    iov->iov_base = buf;
    iov->iov_len = len;
    memset(&msg->msg_hdr, 0, sizeof msg->msg_hdr);
    msg->msg_hdr.msg_iov = iov;
    msg->msg_hdr.msg_iovlen = 1;
    if (from != NULL) {
        msg->msg_hdr.msg_name = from;
        msg->msg_hdr.msg_namelen = sizeof *from;
    }
}

static void nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) die("fcntl");
}

/* ---- GSO (--gso) ---------------------------------------------------------------------- */

static int gso;                           /* runs leave with UDP_SEGMENT while this is set */
static uint64_t gso_runs, gso_fallbacks;  /* messages sent with it; times it was refused */

union segment_control {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
};

/* How many datagrams of `size` bytes one GSO message may carry. */
static int per_run(size_t size) {
    size_t n = size ? GSO_BYTES / size : GSO_SEGMENTS;
    return n < 1 ? 1 : n > GSO_SEGMENTS ? GSO_SEGMENTS : (int)n;
}

/* Make `hdr` (its msg_iov already the run's `count` buffers) a GSO send of `size`-byte
 * segments; a run of one stays a plain datagram. */
static void segment(struct msghdr *hdr, union segment_control *control, size_t size,
                    size_t count) {
    hdr->msg_iovlen = count;
    if (count < 2) {
        hdr->msg_control = NULL;
        hdr->msg_controllen = 0;
        return;
    }
    uint16_t value = (uint16_t)size;
    hdr->msg_control = control->buf;
    hdr->msg_controllen = sizeof control->buf;
    struct cmsghdr *cm = CMSG_FIRSTHDR(hdr);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof value);
    memcpy(CMSG_DATA(cm), &value, sizeof value);
}

/* An error that says GSO cannot work here: off for good (counted). */
static int gso_refused(int err) {
    if (err != EIO && err != EINVAL && err != ENOPROTOOPT && err != EOPNOTSUPP && err != EMSGSIZE)
        return 0;
    gso = 0;
    gso_fallbacks++;
    return 1;
}

/* Send `n` datagrams (msgs[i] one buffer each, with their addresses if any) as GSO runs:
 * consecutive ones with one address and one size (the kernel requires all but the last
 * of a run to be the segment size; here all are) share one message. Returns how many
 * datagrams the kernel took; on an error that is not GSO's, *err is set and the rest of
 * the batch is not sent. A GSO refusal turns GSO off and returns 0 datagrams sent of the
 * message that failed and after: the caller sends those one by one. */
static int send_runs(int fd, struct mmsghdr *msgs, int n, int *err) {
    struct mmsghdr runs[BATCH];
    union segment_control controls[BATCH];
    int first[BATCH + 1], count = 0;
    for (int i = 0; i < n;) {
        struct msghdr *h = &msgs[i].msg_hdr;
        size_t size = h->msg_iov[0].iov_len;
        int limit = per_run(size), j = i + 1;
        while (j < n && j - i < limit && msgs[j].msg_hdr.msg_iov[0].iov_len == size &&
               msgs[j].msg_hdr.msg_namelen == h->msg_namelen &&
               (h->msg_namelen == 0 ||
                !memcmp(msgs[j].msg_hdr.msg_name, h->msg_name, h->msg_namelen)))
            j++;
        runs[count].msg_hdr = *h;
        segment(&runs[count].msg_hdr, &controls[count], size, (size_t)(j - i));
        first[count++] = i;
        i = j;
    }
    first[count] = n;
    int done = 0;
    *err = 0;
    while (done < count) {
        int sent = sendmmsg(fd, runs + done, (unsigned)(count - done), MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (!gso_refused(errno)) *err = errno;
            break;
        }
        for (int r = done; r < done + sent; r++)
            if (runs[r].msg_hdr.msg_iovlen > 1) gso_runs++;
        done += sent;
    }
    return first[done];
}

/* ---- the echo peer ------------------------------------------------------------------ */

static int peer_main(double seconds) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    set_buffers(fd, 4 << 20);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    socklen_t len = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0) die("getsockname");
    nonblocking(fd);
    printf("{\"port\":%d}\n", ntohs(addr.sin_port));
    fflush(stdout);

    static char bufs[BATCH][BUFSIZE];
    static struct sockaddr_in from[BATCH];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    uint64_t received = 0, echoed = 0, dropped = 0, wakeups = 0;
    uint64_t deadline = now_ns() + (uint64_t)(seconds * 1e9);
    struct pollfd fds[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    char line[256];
    size_t line_used = 0;

    while (now_ns() < deadline) {
        int ready = poll(fds, 2, 100);
        if (ready < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (ready == 0) continue;
        wakeups++;
        if (fds[0].revents & POLLIN) {
            for (int round = 0; round < 4; round++) { /* bounded, so stdin is not starved */
                for (int i = 0; i < BATCH; i++)
                    point_at(&msgs[i], &iov[i], bufs[i], BUFSIZE, &from[i]);
                int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
                if (n < 0) {
                    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
                    die("recvmmsg");
                }
                received += (uint64_t)n;
                for (int i = 0; i < n; i++) iov[i].iov_len = msgs[i].msg_len;
                int done = 0;
                if (gso) { /* runs per address and size; what GSO refused goes below */
                    int err;
                    done = send_runs(fd, msgs, n, &err);
                    echoed += (uint64_t)done;
                    if (err) {
                        dropped += (uint64_t)(n - done);
                        done = n;
                    }
                }
                while (done < n) {
                    int sent = sendmmsg(fd, msgs + done, (unsigned)(n - done), MSG_DONTWAIT);
                    if (sent < 0) {
                        if (errno == EINTR) continue;
                        /* a full send buffer (EAGAIN) or an ICMP error from an
                         * earlier datagram: this batch's rest is dropped, counted */
                        dropped += (uint64_t)(n - done);
                        break;
                    }
                    done += sent;
                    echoed += (uint64_t)sent;
                }
                if (n < BATCH) break;
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP)) {
            ssize_t got = read(0, line + line_used, sizeof line - line_used);
            if (got <= 0) break; /* the driver closed our stdin: done */
            line_used += (size_t)got;
            while (line_used > 0) {
                char *nl = memchr(line, '\n', line_used);
                if (!nl) {
                    if (line_used == sizeof line) line_used = 0;
                    break;
                }
                double user, sys;
                cpu_times(&user, &sys);
                printf("{\"received\":%llu,\"echoed\":%llu,\"dropped\":%llu,\"wakeups\":%llu,"
                       "\"gso_runs\":%llu,\"gso_fallbacks\":%llu,"
                       "\"user\":%.6f,\"sys\":%.6f,\"clock\":%.6f}\n",
                       (unsigned long long)received, (unsigned long long)echoed,
                       (unsigned long long)dropped, (unsigned long long)wakeups,
                       (unsigned long long)gso_runs, (unsigned long long)gso_fallbacks, user,
                       sys, now_ns() / 1e9);
                fflush(stdout);
                size_t used = (size_t)(nl - line) + 1;
                memmove(line, nl + 1, line_used - used);
                line_used -= used;
            }
        }
    }
    return 0;
}

/* ---- the client ----------------------------------------------------------------------- */

struct flow {
    int fd;
    uint32_t epoch;
    uint32_t outstanding; /* of the current epoch */
    uint64_t last_progress;
    uint64_t next_send; /* paced mode */
};

struct counters {
    uint64_t sent, received, timeouts, send_failed, late, skipped, wakeups;
};

static struct flow *flows;
static int nflows;
static int payload_size = 100;
static unsigned channel = 0x4000;
static uint64_t hist[HIST + 1];
static int recording;
static struct counters total;

static void fill(char *buf, int flow, uint32_t epoch, uint64_t ts) {
    buf[0] = (char)(channel >> 8);
    buf[1] = (char)(channel & 0xff);
    buf[2] = (char)(payload_size >> 8);
    buf[3] = (char)(payload_size & 0xff);
    uint32_t f = (uint32_t)flow;
    memcpy(buf + 4, &f, 4);
    memcpy(buf + 8, &epoch, 4);
    memcpy(buf + 12, &ts, 8);
}

/* Send `count` datagrams on flow `f` (at most BATCH per sendmmsg). */
static void send_on(int f, int count, uint64_t ts) {
    static char bufs[BATCH][BUFSIZE];
    static int prepared;
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    if (!prepared) {
        memset(bufs, 0, sizeof bufs);
        prepared = 1;
    }
    struct flow *fl = &flows[f];
    while (count > 0) {
        int n = count < BATCH ? count : BATCH;
        for (int i = 0; i < n; i++) {
            fill(bufs[i], f, fl->epoch, ts);
            point_at(&msgs[i], &iov[i], bufs[i], (size_t)(4 + payload_size), NULL);
        }
        int done = 0, end = n; /* `end`: past what is still to be sent one by one */
        if (gso) { /* the window in runs; what GSO refused goes one by one below */
            int err;
            done = send_runs(fl->fd, msgs, n, &err);
            if (err) { /* as below: not sent, the watchdog refills */
                total.send_failed += (uint64_t)(n - done);
                end = done;
            }
        }
        while (done < end) {
            int sent = sendmmsg(fl->fd, msgs + done, (unsigned)(end - done), MSG_DONTWAIT);
            if (sent < 0) {
                if (errno == EINTR) continue;
                /* EAGAIN (full send buffer), ECONNREFUSED (an ICMP error of an earlier
                 * datagram): not sent; the watchdog refills a closed-loop flow */
                total.send_failed += (uint64_t)(end - done);
                break;
            }
            done += sent;
        }
        total.sent += (uint64_t)done;
        fl->outstanding += (uint32_t)done;
        count -= n;
    }
}

/* Read what is queued on flow `f` (one recvmmsg); returns replies of the current epoch. */
static int receive_on(int f, uint64_t now) {
    static char bufs[BATCH][BUFSIZE];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    struct flow *fl = &flows[f];
    for (int i = 0; i < BATCH; i++)
        point_at(&msgs[i], &iov[i], bufs[i], BUFSIZE, NULL);
    int n = recvmmsg(fl->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNREFUSED)
            return 0;
        die("recvmmsg");
    }
    int current = 0;
    for (int i = 0; i < n; i++) {
        const unsigned char *b = (const unsigned char *)bufs[i];
        if (msgs[i].msg_len < 20 || (b[0] >> 6) != 1) continue; /* STUN, not ChannelData */
        uint32_t epoch;
        uint64_t ts;
        memcpy(&epoch, b + 8, 4);
        memcpy(&ts, b + 12, 8);
        total.received++;
        if (epoch == fl->epoch) {
            current++;
            if (fl->outstanding) fl->outstanding--;
        } else {
            total.late++;
        }
        if (recording && now > ts) {
            uint64_t us = (now - ts) / 1000;
            hist[us < HIST ? us : HIST]++;
        }
    }
    if (n > 0) fl->last_progress = now;
    return current;
}

static double percentile(double fraction, uint64_t count) {
    if (count == 0) return -1;
    uint64_t want = (uint64_t)(fraction * (double)count), seen = 0;
    for (int i = 0; i <= HIST; i++) {
        seen += hist[i];
        if (seen > want) return i;
    }
    return HIST;
}

static void parse_fds(char *list) {
    int cap = 64;
    flows = calloc((size_t)cap, sizeof *flows);
    for (char *item = strtok(list, ","); item; item = strtok(NULL, ",")) {
        int lo, hi;
        if (sscanf(item, "%d-%d", &lo, &hi) != 2) hi = lo = atoi(item);
        for (int fd = lo; fd <= hi; fd++) {
            if (nflows == cap) {
                cap *= 2;
                flows = realloc(flows, (size_t)cap * sizeof *flows);
            }
            flows[nflows++].fd = fd;
        }
    }
    if (!flows) die("calloc");
}

static int client_main(int argc, char **argv) {
    int inflight = 0;
    double rate = 0, warmup = 1, duration = 5, drain = 0.5, loss_timeout_ms = 250;
    char *fds = NULL;
    for (int i = 0; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--gso")) {
            gso = 1;
            continue;
        }
        if (i + 1 == argc) {
            fprintf(stderr, "loadgen: %s needs a value\n", k);
            return 2;
        }
        char *v = argv[++i];
        if (!strcmp(k, "--fds")) fds = v;
        else if (!strcmp(k, "--size")) payload_size = atoi(v);
        else if (!strcmp(k, "--inflight")) inflight = atoi(v);
        else if (!strcmp(k, "--rate")) rate = atof(v);
        else if (!strcmp(k, "--channel")) channel = (unsigned)strtoul(v, NULL, 0);
        else if (!strcmp(k, "--warmup")) warmup = atof(v);
        else if (!strcmp(k, "--duration")) duration = atof(v);
        else if (!strcmp(k, "--drain")) drain = atof(v);
        else if (!strcmp(k, "--loss-timeout")) loss_timeout_ms = atof(v);
        else {
            fprintf(stderr, "loadgen: unknown option %s\n", k);
            return 2;
        }
    }
    if (!fds || payload_size < 16 || payload_size > BUFSIZE - 4 || (inflight <= 0) == (rate <= 0)) {
        fprintf(stderr, "loadgen client: need --fds, --size 16..%d and one of --inflight, --rate\n",
                BUFSIZE - 4);
        return 2;
    }
    parse_fds(fds);
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int f = 0; f < nflows; f++) {
        nonblocking(flows[f].fd);
        set_buffers(flows[f].fd, 1 << 20);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)f};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, flows[f].fd, &ev) < 0) die("epoll_ctl fd");
    }
    int timer = -1;
    uint64_t interval = 0;
    if (rate > 0) {
        interval = (uint64_t)(1e9 / rate);
        timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
        if (timer < 0) die("timerfd_create");
        struct itimerspec tick = {.it_interval = {0, 1000000}, .it_value = {0, 1000000}};
        if (timerfd_settime(timer, 0, &tick, NULL) < 0) die("timerfd_settime");
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, timer, &ev) < 0) die("epoll_ctl timer");
    }

    uint64_t start = now_ns();
    uint64_t window_start = start + (uint64_t)(warmup * 1e9);
    uint64_t window_end = window_start + (uint64_t)(duration * 1e9);
    uint64_t stop = window_end + (uint64_t)(drain * 1e9);
    uint64_t loss_timeout = (uint64_t)(loss_timeout_ms * 1e6);
    uint64_t next_watch = start + loss_timeout / 4;
    int phase = 0; /* 0 warm-up, 1 window, 2 drain */
    struct counters at_start = {0};
    double user0 = 0, sys0 = 0;
    uint64_t clock0 = 0;

    for (int f = 0; f < nflows; f++) {
        flows[f].last_progress = start;
        flows[f].next_send = start + interval * (uint64_t)f / (uint64_t)nflows;
        if (inflight) send_on(f, inflight, start);
    }

    struct epoll_event events[256];
    for (;;) {
        uint64_t now = now_ns();
        if (phase == 0 && now >= window_start) {
            phase = 1;
            recording = 1;
            at_start = total;
            cpu_times(&user0, &sys0);
            clock0 = now;
            printf("{\"event\":\"start\",\"flows\":%d}\n", nflows);
            fflush(stdout);
        }
        if (phase == 1 && now >= window_end) {
            phase = 2;
            recording = 0;
            double user, sys;
            cpu_times(&user, &sys);
            uint64_t rtts = 0;
            for (int i = 0; i <= HIST; i++) rtts += hist[i];
            printf("{\"event\":\"end\",\"seconds\":%.6f,\"sent\":%llu,\"received\":%llu,"
                   "\"timeouts\":%llu,\"send_failed\":%llu,\"late\":%llu,\"skipped\":%llu,"
                   "\"wakeups\":%llu,\"user\":%.6f,\"sys\":%.6f,\"rtt_count\":%llu,"
                   "\"rtt_p50\":%.0f,\"rtt_p99\":%.0f,\"rtt_max\":%.0f}\n",
                   (now - clock0) / 1e9, (unsigned long long)(total.sent - at_start.sent),
                   (unsigned long long)(total.received - at_start.received),
                   (unsigned long long)(total.timeouts - at_start.timeouts),
                   (unsigned long long)(total.send_failed - at_start.send_failed),
                   (unsigned long long)(total.late - at_start.late),
                   (unsigned long long)(total.skipped - at_start.skipped),
                   (unsigned long long)(total.wakeups - at_start.wakeups), user - user0,
                   sys - sys0, (unsigned long long)rtts, percentile(0.50, rtts),
                   percentile(0.99, rtts), percentile(1.0, rtts));
            fflush(stdout);
        }
        if (now >= stop) break;

        uint64_t wake = phase < 2 ? (phase == 0 ? window_start : window_end) : stop;
        if (phase < 2 && inflight && next_watch < wake) wake = next_watch;
        int timeout_ms = wake > now ? (int)((wake - now) / 1000000) + 1 : 0;
        if (timeout_ms > 100) timeout_ms = 100;
        int n = epoll_wait(ep, events, 256, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        total.wakeups++;
        now = now_ns();
        for (int i = 0; i < n; i++) {
            uint32_t f = events[i].data.u32;
            if (f == UINT32_MAX) { /* the pacing tick: every flow that is due sends one */
                uint64_t ticks;
                if (read(timer, &ticks, sizeof ticks) < 0 && errno != EAGAIN) die("read timer");
                if (phase == 2) continue;
                for (int g = 0; g < nflows; g++) {
                    if (flows[g].next_send > now) continue;
                    send_on(g, 1, now);
                    flows[g].next_send += interval;
                    if (flows[g].next_send <= now) { /* fell a whole interval behind */
                        total.skipped++;
                        flows[g].next_send = now + interval;
                    }
                }
                continue;
            }
            int replies = receive_on((int)f, now);
            if (inflight && phase < 2 && replies > 0) send_on((int)f, replies, now);
        }
        if (inflight && phase < 2 && now >= next_watch) {
            next_watch = now + loss_timeout / 4;
            for (int f = 0; f < nflows; f++) {
                struct flow *fl = &flows[f];
                if (fl->outstanding >= (uint32_t)inflight && now - fl->last_progress < loss_timeout)
                    continue;
                if (now - fl->last_progress < loss_timeout) { /* a send failed: top up */
                    send_on(f, inflight - (int)fl->outstanding, now);
                    continue;
                }
                total.timeouts++;
                fl->epoch++;
                fl->outstanding = 0;
                fl->last_progress = now;
                send_on(f, inflight, now);
            }
        }
    }
    printf("{\"event\":\"done\",\"sent\":%llu,\"received\":%llu,\"lost\":%lld,"
           "\"timeouts\":%llu,\"send_failed\":%llu,\"gso_runs\":%llu,\"gso_fallbacks\":%llu}\n",
           (unsigned long long)total.sent, (unsigned long long)total.received,
           (long long)total.sent - (long long)total.received,
           (unsigned long long)total.timeouts, (unsigned long long)total.send_failed,
           (unsigned long long)gso_runs, (unsigned long long)gso_fallbacks);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "peer")) {
        double seconds = 600;
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "--gso")) gso = 1;
            else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
            else {
                fprintf(stderr, "loadgen peer: unknown option %s\n", argv[i]);
                return 2;
            }
        }
        return peer_main(seconds);
    }
    if (argc >= 2 && !strcmp(argv[1], "client")) return client_main(argc - 2, argv + 2);
    fprintf(stderr, "usage: loadgen peer [--seconds T] [--gso] | loadgen client --fds LIST ...\n");
    return 2;
}
