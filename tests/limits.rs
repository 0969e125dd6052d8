//! The HTTP server's limits, in-process on paused time over real loopback sockets: the
//! connection cap (503 beyond it, served again once a slot frees), the header read timeout
//! (slowloris and silent connections cut; idle kept-alive connections not), the idle timeout, the
//! stall timeout (an answer the client never reads), and the request head and body sizes. Each
//! limit's closings show in `office365_activations_exporter_http_connections_closed_total`.
//!
//! The binary under a real flood, with the real timeouts: tests/chaos_binary.rs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use office365_activations_exporter::exposition::LIVE_TTL;
use office365_activations_exporter::server::{
    self, Limits, ServerOptions, HEADER_READ_TIMEOUT, IDLE_TIMEOUT, MAX_REQUEST_BODY,
    MAX_REQUEST_HEAD, STALL_TIMEOUT,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const SECOND: Duration = Duration::from_secs(1);

/// `host:port` of a harness base URL.
fn address(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

async fn connect(base: &str) -> TcpStream {
    TcpStream::connect(address(base)).await.unwrap()
}

/// What the peer did, seen without blocking and without taking more than `buf` from it.
#[derive(Debug, PartialEq)]
enum Peer {
    /// Nothing to read, connection open.
    Quiet,
    /// Sent bytes (read and dropped).
    Sent,
    /// Closed (end of stream or reset).
    Closed,
}

fn peer(stream: &TcpStream) -> Peer {
    let mut buf = [0u8; 64 * 1024];
    match stream.try_read(&mut buf) {
        Ok(0) => Peer::Closed,
        Ok(_) => Peer::Sent,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Peer::Quiet,
        Err(_) => Peer::Closed,
    }
}

/// Waits (wall-clock bound, on the frozen tokio clock) until the server closed `stream`.
async fn until_closed(what: &str, stream: &TcpStream) {
    until(what, || peer(stream) == Peer::Closed).await;
}

/// Reads one answer (head and Content-Length body) from `stream`: (status, head, body). Bounded
/// in wall-clock time, as [`until`] is.
async fn read_answer(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut data = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                let body = data[end + 4..end + 4 + length].to_vec();
                data.drain(..end + 4 + length);
                return (status, head, body);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no whole answer; got {} bytes",
            data.len()
        );
        match stream.try_read(&mut buf) {
            Ok(0) => panic!("closed after {} bytes of an answer", data.len()),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => tokio::task::yield_now().await,
            Err(e) => panic!("{e} after {} bytes of an answer", data.len()),
        }
    }
}

/// Everything `stream` delivers until the server closes it (bounded in wall-clock time).
async fn read_to_close(stream: &mut TcpStream) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut total = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        assert!(std::time::Instant::now() < deadline, "never closed");
        match stream.try_read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => tokio::task::yield_now().await,
            Err(_) => return total,
        }
    }
}

const HEALTHY: &[u8] = b"GET /-/healthy HTTP/1.1\r\nHost: exporter\r\n\r\n";

/// The limits counter of `reason`, from the harness's /metrics (the live part is rebuilt at
/// most every LIVE_TTL: the clock is moved past it first). Process-wide: tests running in
/// parallel only add to it.
async fn closed_total(h: &Harness, reason: &str) -> f64 {
    tokio::time::advance(LIVE_TTL + SECOND).await;
    h.scrape()
        .await
        .get(
            "office365_activations_exporter_http_connections_closed_total",
            &[("reason", reason)],
        )
        .unwrap_or_else(|| panic!("no closed_total series for reason {reason}"))
}

#[tokio::test(start_paused = true)]
async fn a_request_head_must_arrive_whole_within_the_header_read_timeout_of_the_accept() {
    let h = Harness::start().await;
    let before = closed_total(&h, "header_timeout").await;
    let silent = connect(&h.base).await;
    let mut slowloris = connect(&h.base).await;
    slowloris
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\nX-Slow: ")
        .await
        .unwrap();
    settle().await;
    tokio::time::advance(HEADER_READ_TIMEOUT - SECOND).await;
    slowloris.write_all(b"a").await.unwrap(); // trickling does not extend it
    settle().await;
    assert_eq!(peer(&silent), Peer::Quiet, "cut before the timeout");
    assert_eq!(peer(&slowloris), Peer::Quiet, "cut before the timeout");
    tokio::time::advance(2 * SECOND).await;
    until_closed("the silent connection is cut", &silent).await;
    until_closed("the slowloris connection is cut", &slowloris).await;
    assert!(closed_total(&h, "header_timeout").await >= before + 2.0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_kept_alive_connection_waits_for_its_next_request_until_the_idle_timeout() {
    let h = Harness::start().await;
    let mut kept = connect(&h.base).await;
    kept.write_all(HEALTHY).await.unwrap();
    assert_eq!(read_answer(&mut kept).await.0, 200);
    // Idle for three header timeouts: hyper's own header_read_timeout would have closed it.
    tokio::time::advance(HEADER_READ_TIMEOUT * 3).await;
    settle().await;
    assert_eq!(
        peer(&kept),
        Peer::Quiet,
        "an idle kept-alive connection was cut"
    );
    kept.write_all(HEALTHY).await.unwrap();
    assert_eq!(read_answer(&mut kept).await.0, 200, "and it still serves");

    // A later request's head is timed from its first byte, not from the previous answer.
    tokio::time::advance(HEADER_READ_TIMEOUT * 2).await;
    kept.write_all(b"GET /-/healthy HTTP/1.1\r\n")
        .await
        .unwrap();
    settle().await;
    tokio::time::advance(HEADER_READ_TIMEOUT - SECOND).await;
    settle().await;
    assert_eq!(peer(&kept), Peer::Quiet);
    tokio::time::advance(2 * SECOND).await;
    until_closed("the trickled head is cut", &kept).await;

    // With no request at all, the idle timeout.
    let before = closed_total(&h, "idle_timeout").await;
    let mut idle = connect(&h.base).await;
    idle.write_all(HEALTHY).await.unwrap();
    assert_eq!(read_answer(&mut idle).await.0, 200);
    settle().await;
    tokio::time::advance(IDLE_TIMEOUT - SECOND).await;
    settle().await;
    assert_eq!(peer(&idle), Peer::Quiet, "cut before the idle timeout");
    tokio::time::advance(2 * SECOND).await;
    until_closed("the idle connection is closed", &idle).await;
    assert!(closed_total(&h, "idle_timeout").await > before);
    h.stop().await;
}

/// A socket that takes little at a time: a small receive buffer, so the server's writes stall
/// soon.
async fn small_window(base: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect(address(base).parse().unwrap())
        .await
        .unwrap()
}

/// `n` product types: a /metrics body of about `n` times 330 bytes.
fn many_products(n: usize) -> Vec<office365_activations_exporter::fake_graph::FakeProduct> {
    (0..n)
        .map(|i| product(&format!("PRODUCT TYPE NUMBER {i:06}"), 1000, 500, 10))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_answer_the_client_does_not_read_is_cut_after_the_stall_timeout() {
    let h = Harness::with(Options {
        max_report_size: 64 << 20,
        configure: Some(Box::new(|fake, _| {
            fake.set_products(&tenant_id(0), date(), many_products(25_000));
        })),
        ..Options::default()
    })
    .await;
    let size = h.scrape().await.text.len();
    // More than the kernel buffers on both ends hold (4 MiB at most for the server's).
    assert!(
        size > 6 << 20,
        "the body fills the socket buffers: {size} bytes"
    );
    let before = closed_total(&h, "stall_timeout").await;
    let request = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n";
    let mut stuck = small_window(&h.base).await;
    stuck.write_all(request).await.unwrap();
    let mut late = small_window(&h.base).await;
    late.write_all(request).await.unwrap();
    settle().await; // the server fills both sockets and waits
    tokio::time::advance(STALL_TIMEOUT - SECOND).await;
    settle().await;
    // A client that reads late, but before the timeout, gets it all.
    let (status, _, body) = read_answer(&mut late).await;
    assert_eq!(status, 200);
    // The same body but for the live part (process_* values).
    assert!(
        body.len().abs_diff(size) < 4096,
        "{} of {size} bytes",
        body.len()
    );
    tokio::time::advance(2 * SECOND).await;
    let got = read_to_close(&mut stuck).await;
    assert!(
        got + (1 << 20) < size,
        "the stalled answer was cut: {got} of {size} bytes arrived"
    );
    assert!(closed_total(&h, "stall_timeout").await > before);
    h.stop().await;
}

/// A server over the harness's exporter with these limits: its base URL and its stop.
async fn serve_with(h: &Harness, limits: Limits) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::run_with(
        listener,
        Arc::clone(&h.exporter),
        ServerOptions {
            telemetry_path: "/metrics".into(),
            default_scrape_timeout: Duration::from_secs(10),
            reloader: None,
            web: Default::default(),
            health_without_auth: false,
            sd_address: "exporter.example:10036".into(),
            shard: Default::default(),
        },
        limits,
        async {
            let _ = stopped.await;
        },
    ));
    (base, stop)
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_cap_get_503_until_a_slot_frees() {
    let h = Harness::start().await;
    let (base, _stop) = serve_with(
        &h,
        Limits {
            max_connections: 3,
            ..Limits::default()
        },
    )
    .await;
    let before = closed_total(&h, "max_connections").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&base).await;
        stream.write_all(HEALTHY).await.unwrap();
        assert_eq!(read_answer(&mut stream).await.0, 200);
        held.push(stream);
    }
    for _ in 0..2 {
        let mut refused = connect(&base).await;
        refused.write_all(HEALTHY).await.unwrap();
        let (status, head, body) = read_answer(&mut refused).await;
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 503, "{head}\n{body}");
        assert!(body.contains("--web.max-connections"), "{body}");
        assert!(head.to_ascii_lowercase().contains("connection: close"));
        until_closed("the refused connection is closed", &refused).await;
    }
    // The held connections were not disturbed.
    held[1].write_all(HEALTHY).await.unwrap();
    assert_eq!(read_answer(&mut held[1]).await.0, 200);

    drop(held.remove(0));
    let mut served = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !served {
        assert!(std::time::Instant::now() < deadline, "no slot freed");
        let mut next = connect(&base).await;
        next.write_all(HEALTHY).await.unwrap();
        served = read_answer(&mut next).await.0 == 200;
    }
    assert!(closed_total(&h, "max_connections").await >= before + 2.0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn request_heads_and_bodies_over_the_limits_are_refused() {
    let h = Harness::start().await;
    let before = closed_total(&h, "too_large").await;
    let with_header = |size: usize| {
        format!(
            "GET /-/healthy HTTP/1.1\r\nHost: exporter\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(size)
        )
    };
    let mut big = connect(&h.base).await;
    big.write_all(with_header(MAX_REQUEST_HEAD).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_answer(&mut big).await.0, 431);
    until_closed("a too large head closes the connection", &big).await;
    let mut fine = connect(&h.base).await;
    fine.write_all(with_header(MAX_REQUEST_HEAD / 2).as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut fine).await.0,
        200,
        "half the limit is fine"
    );

    let mut long_uri = connect(&h.base).await;
    long_uri
        .write_all(format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_HEAD)).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_answer(&mut long_uri).await.0, 431, "a long URL too");

    // A body over the limit is refused from its Content-Length, without reading it.
    let mut upload = connect(&h.base).await;
    upload
        .write_all(
            format!(
                "POST /-/reload HTTP/1.1\r\nHost: exporter\r\nContent-Length: {}\r\n\r\n",
                MAX_REQUEST_BODY + 1
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (status, head, _) = read_answer(&mut upload).await;
    assert_eq!(status, 413, "{head}");
    until_closed("a refused body closes the connection", &upload).await;
    // A small one reaches the endpoint (which refuses for its own reason: no lifecycle API).
    let mut small = connect(&h.base).await;
    small
        .write_all(b"POST /-/reload HTTP/1.1\r\nHost: exporter\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut small).await.0, 403);
    assert!(closed_total(&h, "too_large").await >= before + 3.0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_limits_counter_is_on_metrics_with_every_reason_and_promtool_clean() {
    let h = Harness::start().await;
    tokio::time::advance(LIVE_TTL + SECOND).await;
    let m = h.scrape().await;
    for reason in [
        "max_connections",
        "header_timeout",
        "stall_timeout",
        "idle_timeout",
        "too_large",
    ] {
        assert!(
            m.get(
                "office365_activations_exporter_http_connections_closed_total",
                &[("reason", reason)]
            )
            .is_some(),
            "{reason} missing:\n{}",
            m.text
        );
    }
    assert!(m
        .text
        .contains("# TYPE office365_activations_exporter_http_connections_closed_total counter"));
    let (ok, said) = promtool_metrics_check(&m.text);
    assert!(ok && said.trim().is_empty(), "promtool: {said}");
    h.stop().await;
}
