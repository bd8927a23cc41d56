/*
 * bootbox.net._tftpengine: the steady state of one TFTP read transfer, run outside the
 * interpreter lock.
 *
 * Why this exists: bootbox serves TFTP from one Python loop (bootbox/net/tftp.py). With many
 * lock-step clients at once that loop is the bottleneck: every 512-byte block costs a trip
 * through the interpreter, and the interpreter lock keeps all of them on one core, while
 * tftpd-hpa forks a process per transfer onto every core (README, "Performance"). This module
 * runs the one part of a transfer that repeats per block -- wait for an ACK, move the window,
 * send the next window, with the retransmission deadline -- in C with the lock released, one
 * call per transfer on its own thread, so transfers proceed in parallel.
 *
 * Deliberately narrow. The Python Transfer (bootbox/net/tftp_transfer.py) stays the reference
 * implementation and owns everything else: requests, options, the OACK, logging, events, and
 * every unusual moment. run() returns, with the transfer's state, as soon as anything happens
 * that is not "an ACK arrived and the next window went out":
 *
 *   "complete"  the last block was acknowledged;
 *   "packet"    the client sent something other than a well-formed ACK (returned as bytes);
 *   "timeout"   the retransmission deadline passed (Python's timer resends and counts retries);
 *   "recalled"  the server asked for the transfer back (stop, or a new request from the client);
 *   "refused"   receiving reported ICMP port unreachable (Python drains what is queued, ends);
 *   "gone"      sending reported it (Python ends the transfer: the client is gone);
 *   "resume"    the socket buffer is full or the file read came up short: Python's pump redoes
 *               the send or read and handles the outcome as it always does;
 *   "error"     another system error; its errno is returned, Python ends the transfer with it.
 *
 * The rules applied per ACK are exactly Transfer.on_ack's and Transfer.pump's; tests run the
 * same transfers through both (tests/test_tftp_engine.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define OP_DATA 3
#define OP_ACK 4
#define DATA_HEADER 4
#define MAX_CLIENT_PACKET 1500
#define SPIN_RETRY 256 /* see wait_readable */
#define RECALL_CHECK 64 /* packets read between looks at the recall descriptor, as tftp._DRAIN */

/* run() calls in progress in this process: a transfer polls for its next ACK (spins) only while
 * it is the only one out on the engine, as the Python loop spins only while it serves one. */
static int running_transfers = 0;

enum outcome {
    GOING_ON = 0,
    COMPLETE,
    PACKET,
    TIMEOUT,
    RECALLED,
    REFUSED,
    GONE,
    RESUME,
    ERROR,
};

static const char *const outcome_names[] = {
    "going on", "complete", "packet", "timeout", "recalled", "refused", "gone", "resume", "error",
};

typedef struct {
    /* given */
    int sock, file, recall;
    long long size;
    long long blksize, windowsize, last_block;
    int retries;
    double timeout, spin;
    int slow_ack_limit;
    /* state, given and returned */
    long long base, next_block, window_end;
    long long sent_up_to; /* the highest block ever sent: a rewind lowers next_block, not this */
    int retries_left, resent_on_duplicate, slow_acks;
    unsigned int waits_unspun; /* waits without a spin since slow_acks reached its limit */
    double deadline;
    /* returned */
    int error;
    unsigned char received[MAX_CLIENT_PACKET];
    ssize_t received_length;
    /* buffers */
    unsigned char *ahead;
    size_t ahead_capacity, ahead_length;
    long long ahead_start;
    unsigned char *packet;
} engine;

static double
monotonic(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now); /* the clock behind Python's time.monotonic() */
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* Errors after which a window is left for the timer to resend, as tftp_transfer._RETRY_LATER:
 * no buffer space, and the ICMP errors a connected socket reports for an earlier packet. */
static int
retry_later(int error)
{
    switch (error) {
    case ENOBUFS: case EHOSTUNREACH: case ENETUNREACH: case EHOSTDOWN: case ENETDOWN: case EMSGSIZE:
        return 1;
    default:
        return 0;
    }
}

/* Transfer._rewind: make `first` the next block and the start of the window (first >= 1 here:
 * the OACK's window is never handed over). */
static void
rewind_to(engine *e, long long first)
{
    long long end = first + e->windowsize - 1;
    e->base = e->next_block = first;
    e->window_end = end < e->last_block ? end : e->last_block;
}

/* Transfer._packet: DATA `block` in e->packet, read ahead from the file in whole blocks.
 * Returns the packet's length, or -1 when the file gave fewer bytes than its size promised. */
static ssize_t
data_packet(engine *e, long long block)
{
    long long offset = (block - 1) * e->blksize;
    long long rest = e->size - offset;
    size_t length = (size_t)(rest < e->blksize ? rest : e->blksize);
    long long start = offset - e->ahead_start;
    if (start < 0 || (size_t)start + length > e->ahead_length) {
        size_t want = (size_t)rest < e->ahead_capacity ? (size_t)rest : e->ahead_capacity;
        size_t got = 0;
        while (got < want) {
            ssize_t n = pread(e->file, e->ahead + got, want - got, (off_t)(offset + (long long)got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            got += (size_t)n;
        }
        e->ahead_start = offset;
        e->ahead_length = got;
        start = 0;
        if (got < length)
            return -1;
    }
    e->packet[0] = 0;
    e->packet[1] = OP_DATA;
    e->packet[2] = (unsigned char)((block >> 8) & 0xFF);
    e->packet[3] = (unsigned char)(block & 0xFF);
    memcpy(e->packet + DATA_HEADER, e->ahead + start, length);
    return (ssize_t)(DATA_HEADER + length);
}

/* Transfer.pump: send the rest of the window. */
static enum outcome
pump(engine *e, double now)
{
    e->deadline = now + e->timeout;
    while (e->next_block <= e->window_end) {
        ssize_t length = data_packet(e, e->next_block);
        if (length < 0)
            return RESUME;
        ssize_t sent;
        do {
            sent = send(e->sock, e->packet, (size_t)length, MSG_DONTWAIT);
        } while (sent < 0 && errno == EINTR);
        if (sent < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return RESUME;
            if (errno == ECONNREFUSED)
                return GONE;
            if (retry_later(errno))
                break;
            e->error = errno;
            return ERROR;
        }
        if (e->next_block > e->sent_up_to)
            e->sent_up_to = e->next_block;
        e->next_block += 1;
    }
    return GOING_ON;
}

/* Transfer.on_ack: only ACKs from the last acknowledged block to the highest block sent count
 * (a resend rewinds next_block, but the blocks sent before it were sent);
 * one inside the window moves it there; a repeated ACK is ignored in lock-step mode and
 * resends a window once otherwise. */
static enum outcome
on_ack(engine *e, unsigned int wire_block, double now)
{
    long long previous = e->base - 1;
    long long delta = (long long)((uint64_t)((long long)wire_block - previous) & 0xFFFF);
    if (delta > e->sent_up_to - previous)
        return GOING_ON;
    long long acked = previous + delta;
    if (acked == e->last_block) {
        e->base = acked + 1;
        return COMPLETE;
    }
    if (delta == 0) {
        if (e->windowsize == 1 || e->resent_on_duplicate)
            return GOING_ON;
        e->resent_on_duplicate = 1;
    } else {
        e->resent_on_duplicate = 0;
        e->retries_left = e->retries;
    }
    rewind_to(e, acked + 1);
    return pump(e, now);
}

/* Wait until the socket or the recall descriptor is readable, or the deadline passes (0).
 * A lone lock-step transfer first polls without sleeping for up to e->spin seconds, as
 * TftpServer._spin does: waking a sleeping thread costs about as much as a near client's
 * round trip. After slow_ack_limit misses in a row it stops, as the loop does, but unlike the
 * loop it tries again once every SPIN_RETRY waits: on a busy machine a near client can miss a
 * few in a row (measured: a 16 MiB transfer at 8 instead of 22 MB/s for the rest of it), and a
 * far one costs one spin in SPIN_RETRY blocks. */
static int
wait_readable(engine *e, struct pollfd *fds)
{
    int may_spin = e->slow_acks < e->slow_ack_limit || ++e->waits_unspun % SPIN_RETRY == 0;
    if (may_spin && e->spin > 0 && e->windowsize == 1 &&
        __atomic_load_n(&running_transfers, __ATOMIC_RELAXED) == 1) {
        double until = monotonic() + e->spin;
        int ready;
        do {
            ready = poll(fds, 2, 0);
        } while (ready == 0 && monotonic() <= until);
        if (ready > 0) {
            if (fds[0].revents)
                e->slow_acks = 0;
            return ready;
        }
        if (ready < 0 && errno != EINTR)
            return ready;
        e->slow_acks += 1; /* a few in a row: a slow client or a long path; stop spinning */
    }
    double left = e->deadline - monotonic();
    if (left <= 0)
        return 0;
    return poll(fds, 2, (int)ceil(left * 1000.0));
}

static enum outcome
drive(engine *e)
{
    struct pollfd fds[2] = {{.fd = e->sock, .events = POLLIN}, {.fd = e->recall, .events = POLLIN}};
    unsigned int unpolled = 0;
    for (;;) {
        /* A client flooding the socket never lets it run dry: look at the recall descriptor
         * every RECALL_CHECK packets anyway, before taking the next one off the socket. */
        if (++unpolled >= RECALL_CHECK) {
            unpolled = 0;
            if (poll(&fds[1], 1, 0) > 0)
                return RECALLED;
        }
        /* Read before waiting: a lock-step client's ACK is often queued by the time the window
         * has gone out, and one recv costs less than a poll and a recv. */
        ssize_t n = recv(e->sock, e->received, sizeof e->received, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            /* Only an empty socket times out: an ACK that is already queued still counts, as in
             * the loop, which reads ready sockets before it fires timers. */
            if (monotonic() >= e->deadline)
                return TIMEOUT;
            int ready = wait_readable(e, fds);
            if (ready < 0 && errno != EINTR) {
                e->error = errno;
                return ERROR;
            }
            if (ready > 0 && fds[1].revents)
                return RECALLED;
            unpolled = 0;
            continue;
        }
        double now = monotonic();
        if (n < 0) {
            if (errno == ECONNREFUSED)
                return REFUSED;
            if (errno == EBADF || errno == ENOTSOCK || errno == EFAULT || errno == EINVAL || errno == ENOMEM) {
                e->error = errno; /* would fail again at once: not a client's doing */
                return ERROR;
            }
            /* an ICMP error for an earlier packet (unreachable, prohibited...): the timer resends,
             * as TftpServer._receive does */
        } else if (n < DATA_HEADER || e->received[0] != 0 || e->received[1] != OP_ACK) {
            e->received_length = n;
            return PACKET;
        } else {
            enum outcome result = on_ack(e, ((unsigned int)e->received[2] << 8) | e->received[3], now);
            if (result != GOING_ON)
                return result;
        }
        if (now >= e->deadline) /* stale ACKs alone do not hold the deadline off */
            return TIMEOUT;
    }
}

PyDoc_STRVAR(run_doc,
"run(sock, file, recall, size, blksize, windowsize, retries, timeout, spin, slow_ack_limit,\n"
"    read_ahead, base, next_block, window_end, sent_up_to, retries_left, resent_on_duplicate,\n"
"    slow_acks, deadline)\n"
"--\n\n"
"Serve one transfer from a moment when its window has been sent whole, until something other\n"
"than a routine ACK happens. Blocks without the interpreter lock. Descriptors: the transfer's\n"
"connected non-blocking UDP socket, the file (read with pread), and a descriptor that becomes\n"
"readable when the server wants the transfer back. Returns (outcome, base, next_block,\n"
"window_end, sent_up_to, retries_left, resent_on_duplicate, slow_acks, deadline, packet, errno);\n"
"packet is bytes for outcome 'packet', else None.");

static PyObject *
run(PyObject *Py_UNUSED(module), PyObject *args)
{
    engine e;
    memset(&e, 0, sizeof e);
    long long read_ahead;
    int resent_on_duplicate;
    if (!PyArg_ParseTuple(args, "iiiLLLiddiLLLLLipid:run", &e.sock, &e.file, &e.recall, &e.size,
                          &e.blksize, &e.windowsize, &e.retries, &e.timeout, &e.spin, &e.slow_ack_limit,
                          &read_ahead, &e.base, &e.next_block, &e.window_end, &e.sent_up_to, &e.retries_left,
                          &resent_on_duplicate, &e.slow_acks, &e.deadline))
        return NULL;
    e.resent_on_duplicate = resent_on_duplicate;
    long long last_block = e.size >= 0 && e.blksize > 0 ? e.size / e.blksize + 1 : 0;
    if (e.size < 0 || e.blksize < 8 || e.blksize > 65464 || e.windowsize < 1 || e.retries < 0 ||
        e.base < 1 || e.next_block < e.base || e.window_end > last_block || e.next_block > e.window_end + 1 ||
        e.sent_up_to < e.next_block - 1 || e.sent_up_to > last_block ||
        read_ahead < 1 || !isfinite(e.timeout) || e.timeout <= 0 || !isfinite(e.spin) || e.spin < 0 ||
        !isfinite(e.deadline)) {
        PyErr_SetString(PyExc_ValueError, "run(): transfer state out of range");
        return NULL;
    }
    e.last_block = last_block;
    long long whole_file = (e.size + e.blksize - 1) / e.blksize * e.blksize;
    long long capacity = read_ahead - read_ahead % e.blksize;
    if (capacity > whole_file)
        capacity = whole_file;
    if (capacity < e.blksize)
        capacity = e.blksize;
    e.ahead_capacity = (size_t)capacity;
    e.ahead = PyMem_RawMalloc(e.ahead_capacity);
    e.packet = PyMem_RawMalloc((size_t)(DATA_HEADER + e.blksize));
    if (e.ahead == NULL || e.packet == NULL) {
        PyMem_RawFree(e.ahead);
        PyMem_RawFree(e.packet);
        return PyErr_NoMemory();
    }

    enum outcome result;
    Py_BEGIN_ALLOW_THREADS
    __atomic_add_fetch(&running_transfers, 1, __ATOMIC_RELAXED);
    result = drive(&e);
    __atomic_sub_fetch(&running_transfers, 1, __ATOMIC_RELAXED);
    Py_END_ALLOW_THREADS

    PyMem_RawFree(e.ahead);
    PyMem_RawFree(e.packet);
    PyObject *packet;
    if (result == PACKET) {
        packet = PyBytes_FromStringAndSize((const char *)e.received, e.received_length);
        if (packet == NULL)
            return NULL;
    } else {
        packet = Py_NewRef(Py_None);
    }
    return Py_BuildValue("(sLLLLiNidNi)", outcome_names[result], e.base, e.next_block, e.window_end,
                         e.sent_up_to, e.retries_left, PyBool_FromLong(e.resent_on_duplicate), e.slow_acks, e.deadline,
                         packet, e.error);
}

static PyMethodDef methods[] = {
    {"run", run, METH_VARARGS, run_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "bootbox.net._tftpengine",
    .m_doc = "The per-block part of a TFTP read transfer, outside the interpreter lock "
             "(see bootbox.net.tftp_engine).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__tftpengine(void)
{
    return PyModule_Create(&module);
}
