//! Sockets: UDP with batched receives on a dedicated thread, and newline-separated TCP.
//!
//! The UDP receiver runs on its own OS thread with a blocking socket: under a flood it never
//! waits for a busy async runtime (the HTTP server shares it), and on Linux one `recvmmsg`
//! call returns up to [`BATCH`] datagrams, which are parsed under a single lock of the
//! accumulator. A short receive timeout lets the thread notice shutdown.
//!
//! Wakeups, not parsing, are what a flood of one-line datagrams costs most (each `recvmmsg`
//! that blocks is a context switch): after a call that emptied the queue, the thread pauses
//! briefly ([`coalescing_pause`]) so the next call takes a full batch, as long as the socket
//! buffer can hold what arrives meanwhile many times over.
//!
//! What the buffer cannot hold, the kernel drops before any line is read. On Linux the socket
//! asks for the kernel's drop count with every datagram (`SO_RXQ_OVFL`), so those losses are a
//! self-metric (`statsd_datagrams_dropped_total`) rather than a silent gap.

use super::Shared;
use super::line::{self, LineError};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Datagrams per `recvmmsg` call.
pub(crate) const BATCH: usize = 128;
/// Receive buffer per datagram: the largest UDP payload (65,507 bytes over IPv4, 65,527 over
/// IPv6 without jumbograms), so any datagram a client can send is taken whole. The buffers are
/// allocated zeroed (untouched pages cost no memory) and only what arrives is written. A
/// truncated datagram (impossible at this size) would be counted
/// (`errors_total{reason="truncated"}`).
pub(crate) const DATAGRAM_BUFFER: usize = 64 * 1024;
/// Socket receive buffer asked for; the kernel caps it at `net.core.rmem_max` (the effective
/// size is a self-metric).
pub(crate) const RECV_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// Longest TCP line accepted.
pub(crate) const MAX_TCP_LINE: usize = 64 * 1024;
/// Concurrent TCP connections accepted; more are closed at once.
pub(crate) const MAX_TCP_CONNECTIONS: usize = 256;
/// How often the UDP thread wakes up without traffic to check for shutdown.
const POLL: Duration = Duration::from_millis(100);
/// The longest pause between receives: far below the 100 ms flush interval.
const MAX_PAUSE: Duration = Duration::from_millis(1);
/// Shorter pauses are not worth a timer.
const MIN_PAUSE: Duration = Duration::from_micros(100);
/// Socket buffer charged per queued datagram, an upper estimate for small datagrams (the
/// kernel counts each one's whole allocation, not its payload).
const QUEUED_DATAGRAM_COST: usize = 2048;
/// The arrival rate the pause is sized for (datagrams per second).
const DESIGN_RATE: u64 = 1_000_000;

/// How long to pause after a `recvmmsg` call that returned `received` datagrams of at most
/// `capacity`, with a socket buffer of `buffer_bytes`. Only a call that emptied the queue
/// pauses (a full batch means more is waiting), and only for as long as datagrams arriving at
/// [`DESIGN_RATE`] fill a quarter of the buffer, at most [`MAX_PAUSE`]; a buffer too small for
/// [`MIN_PAUSE`] (the kernel's default `rmem_max`) never pauses, so nothing is lost to it.
pub(crate) fn coalescing_pause(
    received: usize,
    capacity: usize,
    buffer_bytes: usize,
) -> Option<Duration> {
    if received >= capacity {
        return None;
    }
    let queued = (buffer_bytes / QUEUED_DATAGRAM_COST / 4) as u64;
    let pause = Duration::from_micros(queued.saturating_mul(1_000_000) / DESIGN_RATE);
    (pause >= MIN_PAUSE).then(|| pause.min(MAX_PAUSE))
}

/// Binds the UDP socket (with a large receive buffer and a receive timeout).
pub(crate) fn bind_udp(addr: SocketAddr) -> io::Result<(UdpSocket, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER_BYTES) {
        tracing::warn!(error = %e, "cannot enlarge the StatsD UDP receive buffer");
    }
    force_recv_buffer(&socket);
    report_drops(&socket);
    socket.set_read_timeout(Some(POLL))?;
    socket.bind(&addr.into())?;
    let effective = socket.recv_buffer_size().unwrap_or(0);
    Ok((socket.into(), effective))
}

/// Past `net.core.rmem_max` only with CAP_NET_ADMIN (`SO_RCVBUFFORCE`, as journald and
/// syslog daemons do); without the capability this quietly keeps the capped size. A larger
/// buffer absorbs longer scheduling stalls of the receiver thread without loss.
#[cfg(target_os = "linux")]
fn force_recv_buffer(socket: &socket2::Socket) {
    if socket.recv_buffer_size().unwrap_or(0) >= RECV_BUFFER_BYTES {
        return;
    }
    if let Err(e) = set_socket_option(socket, libc::SO_RCVBUFFORCE, RECV_BUFFER_BYTES as _) {
        tracing::debug!(error = %e, "SO_RCVBUFFORCE not permitted");
    }
}

#[cfg(not(target_os = "linux"))]
fn force_recv_buffer(_socket: &socket2::Socket) {}

/// Asks the kernel to attach its count of datagrams dropped on this socket (receive buffer
/// full) to every datagram received (`SO_RXQ_OVFL`, Linux 2.6.33+). Without it the loss is
/// only visible host-wide, in `/proc/net/udp`.
#[cfg(target_os = "linux")]
pub(crate) fn report_drops(socket: &impl std::os::fd::AsRawFd) {
    if let Err(e) = set_socket_option(socket, libc::SO_RXQ_OVFL, 1) {
        tracing::warn!(
            error = %e,
            "the kernel will not report StatsD datagrams it drops (SO_RXQ_OVFL)"
        );
    }
}

/// `setsockopt(SOL_SOCKET, option, value)` for an integer option.
#[cfg(target_os = "linux")]
fn set_socket_option(
    socket: &impl std::os::fd::AsRawFd,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn report_drops<S>(_socket: &S) {}

/// Turns the kernel's drop count, as seen on a datagram, into datagrams dropped since the
/// last one seen. The count is the socket's running total (a `u32` that wraps) when that
/// datagram was queued, so it never decreases in queue order, and the last datagram of a
/// batch carries the batch's.
#[derive(Debug, Default)]
pub(crate) struct DropCount {
    last: u32,
}

impl DropCount {
    /// Datagrams dropped since the previous report; `None` (no report) means none: the kernel
    /// attaches the count only once something was dropped.
    pub(crate) fn observe(&mut self, reported: Option<u32>) -> u64 {
        let Some(total) = reported else {
            return 0;
        };
        let new = total.wrapping_sub(self.last);
        self.last = total;
        u64::from(new)
    }
}

/// Binds the TCP listener.
pub(crate) fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The UDP receive loop; returns when `shared.stop` is set.
pub(crate) fn udp_loop(socket: UdpSocket, buffer_bytes: usize, shared: Arc<Shared>) {
    let mut receiver = Receiver::new();
    let mut drops = DropCount::default();
    while !shared.stop.load(Ordering::Relaxed) {
        match receiver.recv(&socket) {
            Ok(0) => {}
            Ok(n) => {
                shared.metrics.datagrams.inc_by(n as u64);
                // The count only grows in queue order: the batch's last datagram has it all.
                let dropped = drops.observe(receiver.drops(n - 1));
                if dropped > 0 {
                    shared.metrics.datagrams_dropped.inc_by(dropped);
                }
                let mut acc = shared.acc.lock();
                acc.set_clock(std::time::Instant::now());
                for i in 0..n {
                    let (data, truncated) = receiver.datagram(i);
                    if truncated {
                        // The last line is cut: keep the complete ones, count the datagram.
                        acc.reject_line(LineError::Truncated);
                        let complete = data
                            .iter()
                            .rposition(|&b| b == b'\n')
                            .map_or(&data[..0], |p| &data[..p]);
                        acc.ingest_datagram(complete);
                    } else {
                        acc.ingest_datagram(data);
                    }
                }
                shared.absorb(&mut acc);
                drop(acc);
                if let Some(pause) = coalescing_pause(n, Receiver::CAPACITY, buffer_bytes) {
                    std::thread::sleep(pause);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::warn!(error = %e, "StatsD UDP receive failed");
                std::thread::sleep(POLL);
            }
        }
    }
    tracing::debug!("StatsD UDP receiver stopped");
}

#[cfg(target_os = "linux")]
mod batch {
    //! `recvmmsg(2)`: many datagrams per system call.
    use super::{BATCH, DATAGRAM_BUFFER};
    use std::io;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// Distance between two datagram buffers: one buffer plus a cache line. At exactly 64 KiB
    /// apart every datagram's first bytes would map to the same CPU cache set, and a batch of
    /// small datagrams would evict itself while the kernel copies it in and the parser reads
    /// it; the extra line spreads them over the sets.
    const SLOT: usize = DATAGRAM_BUFFER + 64;

    /// Control data per datagram: room for one `SO_RXQ_OVFL` message (a `u32`), in `u64`
    /// words so that the buffer is aligned for `cmsghdr`.
    // SAFETY: CMSG_SPACE only computes a size.
    const CONTROL_BYTES: usize = unsafe { libc::CMSG_SPACE(4) } as usize;
    const CONTROL_WORDS: usize = CONTROL_BYTES.div_ceil(8);

    /// Buffers for one `recvmmsg` call. The iovecs, control buffers and headers point into
    /// `data` and `control`, which are allocated once and never resized, so the pointers stay
    /// valid for the receiver's life.
    pub(crate) struct Receiver {
        data: Box<[u8]>,
        iovecs: Box<[libc::iovec]>,
        control: Box<[u64]>,
        headers: Box<[libc::mmsghdr]>,
    }

    // SAFETY: the raw pointers only point into the receiver's own heap buffers.
    unsafe impl Send for Receiver {}

    impl Receiver {
        /// Datagrams one call can return.
        pub(crate) const CAPACITY: usize = BATCH;

        pub(crate) fn new() -> Receiver {
            let mut data = vec![0u8; BATCH * SLOT].into_boxed_slice();
            let base = data.as_mut_ptr();
            let mut iovecs: Box<[libc::iovec]> = (0..BATCH)
                .map(|i| libc::iovec {
                    // SAFETY: `i * SLOT + DATAGRAM_BUFFER` is within `data` (BATCH slots).
                    iov_base: unsafe { base.add(i * SLOT) }.cast(),
                    iov_len: DATAGRAM_BUFFER,
                })
                .collect();
            let iov_base = iovecs.as_mut_ptr();
            let mut control = vec![0u64; BATCH * CONTROL_WORDS].into_boxed_slice();
            let control_base = control.as_mut_ptr();
            let headers: Box<[libc::mmsghdr]> = (0..BATCH)
                .map(|i| {
                    // SAFETY: an all-zero msghdr is valid (null name, no control data).
                    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
                    // SAFETY: `i < BATCH`, the length of `iovecs`.
                    hdr.msg_iov = unsafe { iov_base.add(i) };
                    hdr.msg_iovlen = 1;
                    // SAFETY: `i * CONTROL_WORDS + CONTROL_WORDS` is within `control`.
                    hdr.msg_control = unsafe { control_base.add(i * CONTROL_WORDS) }.cast();
                    libc::mmsghdr {
                        msg_hdr: hdr,
                        msg_len: 0,
                    }
                })
                .collect();
            Receiver {
                data,
                iovecs,
                control,
                headers,
            }
        }

        /// Receives up to `BATCH` datagrams: blocks for the first (up to the socket's read
        /// timeout), then takes whatever else is queued without waiting.
        pub(crate) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
            for h in self.headers.iter_mut() {
                h.msg_len = 0;
                h.msg_hdr.msg_flags = 0;
                // The kernel sets it to what it wrote.
                h.msg_hdr.msg_controllen = (CONTROL_WORDS * 8) as _;
            }
            debug_assert_eq!(self.iovecs.len(), BATCH);
            debug_assert_eq!(self.control.len(), BATCH * CONTROL_WORDS);
            // SAFETY: `headers` holds BATCH initialized mmsghdr whose iovecs point into
            // `data` with the right lengths; the kernel writes at most `iov_len` bytes each.
            let n = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    self.headers.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    // The flags are a c_int in glibc and a c_uint in musl (the images' target).
                    libc::MSG_WAITFORONE as _,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        }

        /// Datagram `i` of the last batch and whether it was truncated.
        pub(crate) fn datagram(&self, i: usize) -> (&[u8], bool) {
            let h = &self.headers[i];
            let len = (h.msg_len as usize).min(DATAGRAM_BUFFER);
            let start = i * SLOT;
            (
                &self.data[start..start + len],
                h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            )
        }

        /// The kernel's running count of datagrams dropped on the socket, as attached to
        /// datagram `i` of the last batch (absent until the first drop).
        pub(crate) fn drops(&self, i: usize) -> Option<u32> {
            let hdr = &self.headers.get(i)?.msg_hdr;
            // SAFETY: `hdr` is a msghdr the kernel filled: its control pointer and the length
            // it set describe our own `control` slot; the CMSG macros stay within that length.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_SOCKET
                        && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL
                    {
                        return Some(std::ptr::read_unaligned(
                            libc::CMSG_DATA(cmsg).cast::<u32>(),
                        ));
                    }
                    cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
                }
            }
            None
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod batch {
    //! Portable fallback: one datagram per call.
    use super::DATAGRAM_BUFFER;
    use std::io;
    use std::net::UdpSocket;

    pub(crate) struct Receiver {
        data: Box<[u8]>,
        len: usize,
    }

    impl Receiver {
        /// One datagram per call: never a partial batch, so never a pause.
        pub(crate) const CAPACITY: usize = 1;

        pub(crate) fn new() -> Receiver {
            Receiver {
                data: vec![0u8; DATAGRAM_BUFFER + 1].into_boxed_slice(),
                len: 0,
            }
        }

        pub(crate) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
            self.len = socket.recv(&mut self.data)?;
            Ok(1)
        }

        pub(crate) fn datagram(&self, _i: usize) -> (&[u8], bool) {
            let len = self.len.min(DATAGRAM_BUFFER);
            (&self.data[..len], self.len > DATAGRAM_BUFFER)
        }

        /// Kernel drop counts are Linux-only.
        pub(crate) fn drops(&self, _i: usize) -> Option<u32> {
            None
        }
    }
}

use batch::Receiver;

/// Accepts TCP connections until the task is aborted.
pub(crate) async fn tcp_accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let open = shared.metrics.tcp_open.fetch_add(1, Ordering::Relaxed);
                if open >= MAX_TCP_CONNECTIONS as u64 {
                    shared.metrics.tcp_open.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(%peer, "too many StatsD TCP connections; closing");
                    continue;
                }
                shared.metrics.tcp_connections.inc();
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = tcp_connection(stream, &shared).await {
                        tracing::debug!(%peer, error = %e, "StatsD TCP connection ended");
                    }
                    shared.metrics.tcp_open.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "StatsD TCP accept failed");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// Reads newline-separated lines; every read's complete lines are parsed under one lock.
async fn tcp_connection(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    // True while skipping the rest of an over-long line.
    let mut discarding = false;
    loop {
        let start = buf.len();
        buf.resize(start + 16 * 1024, 0);
        let n = stream.read(&mut buf[start..]).await?;
        buf.truncate(start + n);
        if n == 0 {
            if !discarding && !buf.is_empty() {
                let mut acc = shared.acc.lock();
                acc.set_clock(std::time::Instant::now());
                acc.ingest_datagram(&buf);
                shared.absorb(&mut acc);
            }
            return Ok(());
        }
        let mut consumed = 0;
        if let Some(last) = buf.iter().rposition(|&b| b == b'\n') {
            let mut acc = shared.acc.lock();
            acc.set_clock(std::time::Instant::now());
            let mut chunk = &buf[..last];
            if discarding {
                // Skip up to the first newline: the tail of the over-long line.
                let first = chunk
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(chunk.len());
                chunk = chunk.get(first + 1..).unwrap_or(&[]);
                discarding = false;
            }
            for l in line::lines(chunk) {
                if l.len() > MAX_TCP_LINE {
                    acc.reject_line(LineError::LineTooLong);
                } else {
                    acc.ingest_line(l);
                }
            }
            shared.absorb(&mut acc);
            consumed = last + 1;
        }
        buf.drain(..consumed);
        if buf.len() > MAX_TCP_LINE {
            if !discarding {
                let mut acc = shared.acc.lock();
                acc.set_clock(std::time::Instant::now());
                acc.reject_line(LineError::LineTooLong);
                shared.absorb(&mut acc);
            }
            discarding = true;
            buf.clear();
        }
    }
}

#[cfg(test)]
mod drop_count_tests {
    use super::DropCount;

    #[test]
    fn no_report_means_no_drop() {
        let mut d = DropCount::default();
        assert_eq!(d.observe(None), 0);
        assert_eq!(d.observe(Some(5)), 5);
        assert_eq!(d.observe(None), 0);
        assert_eq!(d.observe(Some(5)), 0);
        assert_eq!(d.observe(Some(12)), 7);
    }

    #[test]
    fn the_kernel_count_wraps() {
        let mut d = DropCount::default();
        assert_eq!(d.observe(Some(u32::MAX - 1)), u64::from(u32::MAX - 1));
        assert_eq!(d.observe(Some(2)), 4);
    }
}

#[cfg(test)]
mod pause_tests {
    use super::*;

    /// The effective buffer the sidecar gets with `SO_RCVBUFFORCE` (16 MiB, doubled).
    const LARGE: usize = 2 * RECV_BUFFER_BYTES;
    /// The kernel default `rmem_max` (212,992), doubled.
    const DEFAULT: usize = 425_984;

    #[test]
    fn a_full_batch_never_pauses() {
        assert_eq!(coalescing_pause(BATCH, BATCH, LARGE), None);
        assert_eq!(coalescing_pause(1, 1, LARGE), None);
    }

    #[test]
    fn a_drained_queue_pauses_at_most_max_pause() {
        assert_eq!(coalescing_pause(1, BATCH, LARGE), Some(MAX_PAUSE));
        assert_eq!(coalescing_pause(BATCH - 1, BATCH, LARGE), Some(MAX_PAUSE));
    }

    #[test]
    fn a_small_buffer_never_pauses() {
        assert_eq!(coalescing_pause(1, BATCH, DEFAULT), None);
        assert_eq!(coalescing_pause(1, BATCH, 0), None);
    }

    #[test]
    fn the_pause_leaves_three_quarters_of_the_buffer_free() {
        for buffer in [DEFAULT, 1 << 20, 2 << 20, 4 << 20, LARGE] {
            if let Some(pause) = coalescing_pause(0, BATCH, buffer) {
                let arriving = pause.as_secs_f64() * DESIGN_RATE as f64;
                let room = (buffer / QUEUED_DATAGRAM_COST) as f64;
                assert!(arriving <= room / 4.0, "{buffer}: {arriving} of {room}");
                assert!(pause >= MIN_PAUSE && pause <= MAX_PAUSE);
            }
        }
        // 1 MiB holds 512 queued datagrams: a pause of 128 of them at the design rate.
        assert_eq!(
            coalescing_pause(0, BATCH, 1 << 20),
            Some(Duration::from_micros(128))
        );
    }
}
