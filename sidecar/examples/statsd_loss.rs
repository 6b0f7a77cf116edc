//! Loss benchmark for the StatsD UDP listener: sends a sustained rate of lines over loopback
//! UDP to a real listener (`statsd::spawn`) and reports received vs sent. A benchmark, not a
//! test: it prints figures and exits 0 unless something fails to start.
//!
//! ```text
//! cargo run --release -p monasca-sidecar --example statsd_loss -- [RATE] [SECONDS] [LINES_PER_DATAGRAM] [TARGET]
//! ```
//! Defaults: 200000 lines/s for 10 s, 1 line per datagram (the hardest case: one datagram
//! per line, as unbuffered clients send).
//!
//! With `TARGET` (`host:port` of a running sidecar's StatsD listener) it only sends, and prints
//! one JSON line (`lines_sent`, `counter_increments`, `seconds`): `bench/run.py` measures the
//! whole pipeline of a real sidecar process that way (its CPU time, its `/metrics`).

use monasca_config::SidecarConfig;
use monasca_sidecar::app::App;
use monasca_sidecar::sources::SourceContext;
use monasca_sidecar::sources::statsd;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Kernel drop count of the UDP socket bound to `port` (`/proc/net/udp`, last column).
fn kernel_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let needle = format!(":{port:04X} ");
    table
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| format!("{a} ").ends_with(&needle))
        })
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

/// Sends datagrams with one `sendmmsg(2)` call (the sender must not be the bottleneck of a
/// receiver benchmark); returns how many were sent.
#[cfg(target_os = "linux")]
fn send_batch(socket: &UdpSocket, batch: &[&[u8]]) -> usize {
    use std::os::fd::AsRawFd;
    let mut iovecs: Vec<libc::iovec> = batch
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero msghdr is valid (connected socket: no address).
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_iov = iov;
            hdr.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            }
        })
        .collect();
    let mut sent = 0;
    while sent < headers.len() {
        // SAFETY: the headers point at iovecs that point at live datagram buffers.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers[sent..].as_mut_ptr(),
                (headers.len() - sent) as libc::c_uint,
                0,
            )
        };
        if n <= 0 {
            break;
        }
        sent += n as usize;
    }
    sent
}

#[cfg(not(target_os = "linux"))]
fn send_batch(socket: &UdpSocket, batch: &[&[u8]]) -> usize {
    batch.iter().filter(|d| socket.send(d).is_ok()).count()
}

/// CPU seconds used by the thread named `name` (`/proc/self/task/*/stat`, Linux only).
fn thread_cpu_seconds(name: &str) -> Option<f64> {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        return Some((utime + stime) / ticks_per_second);
    }
    None
}

/// The lines sent: a mix of dialects over 1 000 series; a quarter are timers, the rest
/// counters incremented by 1.
fn corpus() -> Vec<String> {
    (0..1000)
        .map(|i| match i % 4 {
            0 => format!("loss.plain.c{i}:1|c"),
            1 => format!("loss.dog.c{i}:1|c|#env:prod,service:api"),
            2 => format!("loss.monasca.c{i}:1|c|#{{'service': 'monitoring', 'hostname': 'h1'}}"),
            _ => format!("loss.timer.t{i}:{}|ms", i % 300),
        })
        .collect()
}

/// What [`send_paced`] sent.
struct Sent {
    datagrams: u64,
    counter_increments: u64,
    errors: u64,
    time: Duration,
}

/// Sends `total_lines` lines at `rate` lines/s, paced by the clock, `per_datagram` lines per
/// datagram, cycling through [`corpus`].
fn send_paced(socket: &UdpSocket, rate: u64, total_lines: u64, per_datagram: usize) -> Sent {
    let lines = corpus();
    let datagrams: Vec<(Vec<u8>, u64)> = lines
        .chunks(per_datagram)
        .map(|c| {
            let counters = c
                .iter()
                .filter(|l| l.ends_with("|c") || l.contains("|c|"))
                .count();
            (c.join("\n").into_bytes(), counters as u64)
        })
        .collect();
    let total_datagrams = total_lines.div_ceil(per_datagram as u64);
    let datagrams_per_ms = (rate as f64 / per_datagram as f64) / 1000.0;
    let start = Instant::now();
    let mut sent = Sent {
        datagrams: 0,
        counter_increments: 0,
        errors: 0,
        time: Duration::ZERO,
    };
    let mut next = 0usize;
    while sent.datagrams < total_datagrams {
        // Pace by the clock: send what is due, then yield until the next millisecond.
        let due = ((start.elapsed().as_secs_f64() * 1000.0 * datagrams_per_ms) as u64)
            .min(total_datagrams);
        while sent.datagrams < due {
            let n = ((due - sent.datagrams) as usize)
                .min(64)
                .min(datagrams.len() - next);
            let batch: Vec<&[u8]> = datagrams[next..next + n]
                .iter()
                .map(|(d, _)| d.as_slice())
                .collect();
            let done = send_batch(socket, &batch);
            sent.errors += (n - done) as u64;
            sent.counter_increments += datagrams[next..next + done]
                .iter()
                .map(|(_, c)| c)
                .sum::<u64>();
            next = (next + n) % datagrams.len();
            sent.datagrams += n as u64;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    sent.time = start.elapsed();
    sent
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rate = arg(1, 200_000);
    let seconds = arg(2, 10);
    let per_datagram = arg(3, 1).max(1) as usize;
    let total_lines = rate * seconds;

    if let Some(target) = std::env::args().nth(4) {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(&target)?;
        let sent = send_paced(&socket, rate, total_lines, per_datagram);
        println!(
            "{{\"lines_sent\": {total_lines}, \"datagrams\": {}, \"counter_increments\": {}, \"send_errors\": {}, \"seconds\": {:.3}}}",
            sent.datagrams,
            sent.counter_increments,
            sent.errors,
            sent.time.as_secs_f64()
        );
        return Ok(());
    }

    let mut config = SidecarConfig::default();
    config.listen.statsd = "127.0.0.1:0".into();
    config.statsd.tcp = false;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let app = App::new(config);
    let handle = rt.block_on(statsd::spawn(&SourceContext::standalone(&app), None))?;
    let target = handle.udp_addr().ok_or("statsd disabled")?;

    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(target)?;
    println!(
        "sending {total_lines} lines ({rate}/s for {seconds} s, {per_datagram} per datagram) to {target}"
    );
    let sent = send_paced(&socket, rate, total_lines, per_datagram);
    let (sent_datagrams, send_errors, send_time) = (sent.datagrams, sent.errors, sent.time);

    // Let the receiver drain.
    let settle = Instant::now();
    let mut last = handle.lines_received();
    while settle.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(200));
        let now = handle.lines_received();
        if now == last && now >= total_lines {
            break;
        }
        last = now;
    }
    let received = handle.lines_received();
    let lost = total_lines.saturating_sub(received);
    println!(
        "sent:     {total_lines} lines in {sent_datagrams} datagrams over {:.2} s ({:.0} lines/s achieved, {send_errors} send errors)",
        send_time.as_secs_f64(),
        total_lines as f64 / send_time.as_secs_f64()
    );
    println!(
        "received: {received} lines in {} datagrams; lost {lost} ({:.4} %)",
        handle.datagrams_received(),
        lost as f64 * 100.0 / total_lines as f64
    );
    if let Some(cpu) = thread_cpu_seconds("statsd-udp") {
        println!(
            "receiver thread CPU: {cpu:.2} s ({:.0} % of one core while sending)",
            cpu * 100.0 / send_time.as_secs_f64()
        );
    }
    if let Some(drops) = kernel_drops(target.port()) {
        println!("kernel socket drops: {drops}");
    }
    let families = app.self_families();
    if let Some(f) = families
        .iter()
        .find(|f| f.name == "monasca_sidecar_statsd_receive_buffer_bytes")
    {
        println!(
            "effective SO_RCVBUF: {} bytes",
            f.samples.first().map_or(0.0, |s| s.1)
        );
    }
    Ok(())
}
