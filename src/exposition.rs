//! The /metrics body as served, built as rarely as possible.
//!
//! Almost all of the body (report gauges and self-metrics) changes only when a refresh starts or
//! ends; each such change bumps a generation number. A [`Snapshot`] keeps that stable part for
//! its generation, plus the small live part (process_* metrics), rebuilt at most once per
//! [`LIVE_TTL`]. A cached scrape therefore costs an `Arc` clone.
//!
//! The stable part is a [`Source`]: the lines every tenant already holds, written out on demand.
//! A small one is also kept whole (a scrape is then a reference count); above
//! [`KEEP_WHOLE_UP_TO`] it is written out per plain scrape, piece by piece, instead of being held
//! a second time (at ten thousand tenants that copy is 26 MiB, a sixth of the process). Prometheus
//! asks for gzip, which is always kept.
//!
//! Gzip is composed, not recomputed: the stable part is deflated once per generation and
//! sync-flushed (byte-aligned, not final); each snapshot appends the live part as its own final
//! deflate block sequence and a trailer whose CRC-32 is combined from the two parts. The result is
//! one ordinary gzip member, so any client decodes it.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use tokio::time::Instant;

/// The live part (process_* metrics) is rebuilt at most this often.
pub const LIVE_TTL: Duration = Duration::from_secs(1);

/// A stable part up to this size is kept whole; a larger one is written out per plain scrape.
pub const KEEP_WHOLE_UP_TO: usize = 8 << 20;

/// A plain scrape of a written-out stable part is sent in pieces of about this size.
const PIECE: usize = 64 << 10;

/// Where the writing of a [`Source`] stands: its meaning is the source's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// The section (for the exposition: a metric family).
    pub section: usize,
    /// The item within the section.
    pub item: usize,
}

/// A body made of lines held elsewhere, written out on demand, always the same bytes.
pub trait Source: Send + Sync + 'static {
    /// Its exact length in bytes.
    fn len(&self) -> usize;
    /// Whether it has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends its bytes from `position` on to `out`, moving `position`, until `out` holds at
    /// least `want` bytes or the end is reached (then nothing more is appended).
    fn write(&self, position: &mut Position, out: &mut Vec<u8>, want: usize);
}

/// Plain bytes as a source (tests, and bodies made whole elsewhere).
impl Source for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn write(&self, position: &mut Position, out: &mut Vec<u8>, want: usize) {
        let start = position.item.min(self.len());
        let end = (start + want.saturating_sub(out.len())).min(self.len());
        out.extend_from_slice(&self[start..end]);
        position.item = end;
    }
}

/// All of `source`, in one piece.
fn whole(source: &dyn Source) -> Vec<u8> {
    let mut out = Vec::with_capacity(source.len());
    source.write(&mut Position::default(), &mut out, usize::MAX);
    out
}

/// The stable part of the body for one generation.
struct Stable {
    /// The generation it was rendered for.
    generation: u64,
    /// The text, as the lines it is made of.
    source: Arc<dyn Source>,
    /// The text in one piece, when it is no larger than [`KEEP_WHOLE_UP_TO`].
    plain: Option<Bytes>,
    /// Its raw deflate stream, sync-flushed, and its CRC-32; made at the first gzip scrape.
    deflated: OnceLock<(Bytes, crc32fast::Hasher)>,
}

impl Stable {
    /// Feeds the text, piece by piece, to `each`.
    fn for_each_piece(&self, mut each: impl FnMut(&[u8])) {
        if let Some(plain) = &self.plain {
            return each(plain);
        }
        let mut position = Position::default();
        let mut piece = Vec::with_capacity(PIECE + 4096);
        loop {
            piece.clear();
            self.source.write(&mut position, &mut piece, PIECE);
            if piece.is_empty() {
                return;
            }
            each(&piece);
        }
    }
}

/// One servable body.
pub struct Snapshot {
    /// The stable part it is built on.
    stable: Arc<Stable>,
    /// When the live part was rendered.
    built_at: Instant,
    /// The live part's text.
    live: Bytes,
    /// The gzip header, the stable part's deflate stream, and the live part's final deflate
    /// blocks with the trailer; made at the first gzip scrape of this snapshot.
    gzip: OnceLock<[Bytes; 3]>,
}

impl Snapshot {
    /// The body as text, in pieces that are sent one after the other: the stable part is never
    /// copied (with ten thousand tenants it is tens of MB).
    pub fn plain_parts(&self) -> Payload {
        match &self.stable.plain {
            Some(plain) => Payload::new([plain.clone(), self.live.clone(), Bytes::new()]),
            None => Payload {
                stream: Some(Stream {
                    source: Arc::clone(&self.stable.source),
                    position: Position::default(),
                    left: self.stable.source.len(),
                }),
                ..Payload::new([Bytes::new(), self.live.clone(), Bytes::new()])
            },
        }
    }

    /// The body gzip-encoded, in pieces like [`Snapshot::plain_parts`].
    pub fn gzip_parts(&self) -> Payload {
        Payload::new(
            self.gzip
                .get_or_init(|| compose_gzip(&self.stable, &self.live))
                .clone(),
        )
    }

    /// The body as text, in one piece (a copy: for `check` and tests).
    pub fn plain(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.stable.source.len() + self.live.len());
        self.stable
            .for_each_piece(|piece| out.extend_from_slice(piece));
        out.extend_from_slice(&self.live);
        out.into()
    }

    /// The body gzip-encoded, in one piece (a copy: for tests).
    pub fn gzip(&self) -> Bytes {
        self.gzip_parts().concat()
    }
}

/// A response body sent as up to three pieces of shared bytes, without joining them, after a
/// stable part written out piece by piece if there is one.
#[derive(Default)]
pub struct Payload {
    /// Sent first: a stable part too large to be kept whole.
    stream: Option<Stream>,
    /// The pieces, in order; empty ones are skipped.
    parts: [Bytes; 3],
    /// The next piece to send.
    next: usize,
}

/// A [`Source`] being sent.
struct Stream {
    /// What is sent.
    source: Arc<dyn Source>,
    /// How far it is.
    position: Position,
    /// Bytes not sent yet, for the exact Content-Length.
    left: usize,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("streamed", &self.stream.as_ref().map(|s| s.left))
            .field("parts", &self.parts)
            .field("next", &self.next)
            .finish()
    }
}

impl Payload {
    /// A body of these pieces.
    pub fn new(parts: [Bytes; 3]) -> Payload {
        Payload {
            stream: None,
            parts,
            next: 0,
        }
    }

    /// A body of one piece.
    pub fn one(body: impl Into<Bytes>) -> Payload {
        Payload::new([body.into(), Bytes::new(), Bytes::new()])
    }

    /// The pieces joined.
    pub fn concat(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.remaining() as usize);
        if let Some(stream) = &self.stream {
            let mut position = stream.position;
            stream.source.write(&mut position, &mut out, usize::MAX);
        }
        for part in &self.parts[self.next..] {
            out.extend_from_slice(part);
        }
        out.into()
    }

    fn remaining(&self) -> u64 {
        let streamed = self.stream.as_ref().map_or(0, |s| s.left as u64);
        streamed
            + self.parts[self.next..]
                .iter()
                .map(|p| p.len() as u64)
                .sum::<u64>()
    }
}

impl hyper::body::Body for Payload {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if let Some(stream) = &mut self.stream {
            let mut piece = Vec::with_capacity(PIECE + 4096);
            stream
                .source
                .write(&mut stream.position, &mut piece, PIECE.min(stream.left));
            // Never more than announced: the Content-Length is the source's length.
            piece.truncate(stream.left);
            stream.left -= piece.len();
            if stream.left == 0 || piece.is_empty() {
                self.stream = None;
            }
            if !piece.is_empty() {
                return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(piece.into()))));
            }
        }
        while self.next < self.parts.len() {
            let index = self.next;
            self.next += 1;
            let part = std::mem::take(&mut self.parts[index]);
            if !part.is_empty() {
                return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(part))));
            }
        }
        std::task::Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining() == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining())
    }
}

/// Keeps the latest snapshot.
#[derive(Default)]
pub struct Exposition {
    /// The latest snapshot, read without a lock: a cached scrape is an atomic load.
    latest: ArcSwapOption<Snapshot>,
    /// Held while a new snapshot is rendered, so concurrent scrapes render it once; never
    /// held across an `.await`.
    rendering: Mutex<()>,
}

impl Exposition {
    /// A snapshot for `generation`: the cached one if it is of that generation and its live
    /// part is recent, else a new one (reusing the stable part when the generation is the same).
    pub fn snapshot(
        &self,
        generation: u64,
        now: Instant,
        render_stable: impl FnOnce() -> Arc<dyn Source>,
        render_live: impl FnOnce() -> Vec<u8>,
    ) -> Arc<Snapshot> {
        let current = |now: Instant| {
            self.latest.load_full().filter(|snapshot| {
                snapshot.stable.generation == generation && now < snapshot.built_at + LIVE_TTL
            })
        };
        if let Some(snapshot) = current(now) {
            return snapshot;
        }
        let _rendering = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        // Another scrape may have rendered it while this one waited for the lock.
        let now = Instant::now();
        if let Some(snapshot) = current(now) {
            return snapshot;
        }
        let latest = self.latest.load_full();
        let stable = match latest.as_ref() {
            Some(snapshot) if snapshot.stable.generation == generation => {
                Arc::clone(&snapshot.stable)
            }
            _ => {
                let source = render_stable();
                let plain = (source.len() <= KEEP_WHOLE_UP_TO).then(|| whole(&*source).into());
                Arc::new(Stable {
                    generation,
                    source,
                    plain,
                    deflated: OnceLock::new(),
                })
            }
        };
        let live = Bytes::from(render_live());
        let snapshot = Arc::new(Snapshot {
            stable,
            built_at: now,
            live,
            gzip: OnceLock::new(),
        });
        self.latest.store(Some(Arc::clone(&snapshot)));
        snapshot
    }
}

/// gzip header: magic, deflate, no flags, no mtime, no extra flags, OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

fn compose_gzip(stable: &Stable, live: &[u8]) -> [Bytes; 3] {
    let (prefix, stable_crc) = stable.deflated.get_or_init(|| {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::fast());
        let mut crc = crc32fast::Hasher::new();
        stable.for_each_piece(|piece| {
            encoder
                .write_all(piece)
                .expect("deflating into a Vec cannot fail");
            crc.update(piece);
        });
        encoder.flush().expect("deflating into a Vec cannot fail");
        (Bytes::from(encoder.get_ref().clone()), crc)
    });
    let mut tail = DeflateEncoder::new(Vec::new(), Compression::fast());
    tail.write_all(live)
        .expect("deflating into a Vec cannot fail");
    let tail = tail.finish().expect("deflating into a Vec cannot fail");
    let mut crc = stable_crc.clone();
    let mut live_crc = crc32fast::Hasher::new();
    live_crc.update(live);
    crc.combine(&live_crc);
    let size = (stable.source.len() + live.len()) as u32;
    let mut end = Vec::with_capacity(tail.len() + 8);
    end.extend_from_slice(&tail);
    end.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE: the length modulo 2^32, as RFC 1952 says.
    end.extend_from_slice(&size.to_le_bytes());
    [Bytes::from_static(&GZIP_HEADER), prefix.clone(), end.into()]
}

/// True when an Accept-Encoding header value accepts gzip (with a non-zero quality).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let zero_q = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !zero_q
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(body: &[u8]) -> Vec<u8> {
        // A single-member decoder: the composed body must be one ordinary gzip member.
        let mut decoder = flate2::read::GzDecoder::new(body);
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).expect("valid gzip");
        out
    }

    #[tokio::test(start_paused = true)]
    async fn composed_gzip_decodes_to_the_plain_body() {
        let exposition = Exposition::default();
        let stable: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("metric{{tenant=\"t{i}\"}} {i}\n").into_bytes())
            .collect();
        for live in [&b"process_cpu_seconds_total 1.5\n"[..], b""] {
            let snapshot = exposition.snapshot(
                live.len() as u64,
                Instant::now(),
                || Arc::new(stable.clone()),
                || live.to_vec(),
            );
            let gz = snapshot.gzip();
            assert!(gz.len() < snapshot.plain().len() / 4, "compresses");
            assert_eq!(gunzip(&gz), snapshot.plain().to_vec());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stable_part_is_rendered_once_per_generation_and_live_part_once_per_second() {
        let exposition = Exposition::default();
        let stable_renders = std::cell::Cell::new(0);
        let live_renders = std::cell::Cell::new(0);
        let take = |generation| {
            exposition.snapshot(
                generation,
                Instant::now(),
                || {
                    stable_renders.set(stable_renders.get() + 1);
                    Arc::new(format!("gen {generation}\n").into_bytes())
                },
                || {
                    live_renders.set(live_renders.get() + 1);
                    format!("live {}\n", live_renders.get()).into_bytes()
                },
            )
        };
        let first = take(1);
        let again = take(1);
        assert!(Arc::ptr_eq(&first, &again), "cached");
        assert_eq!((stable_renders.get(), live_renders.get()), (1, 1));
        tokio::time::advance(LIVE_TTL).await;
        let later = take(1);
        assert_eq!(
            (stable_renders.get(), live_renders.get()),
            (1, 2),
            "only the live part again"
        );
        assert_eq!(&later.plain()[..], b"gen 1\nlive 2\n");
        assert_eq!(gunzip(&later.gzip()), later.plain().to_vec());
        let next = take(2);
        assert_eq!(
            (stable_renders.get(), live_renders.get()),
            (2, 3),
            "a new generation renders"
        );
        assert_eq!(&next.plain()[..], b"gen 2\nlive 3\n");
    }

    /// Collects a body as hyper would send it: frame by frame, checking the announced size.
    fn sent(mut payload: Payload) -> (Vec<u8>, usize) {
        use hyper::body::Body;
        let announced = payload.size_hint().exact().expect("exact size");
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let (mut out, mut frames) = (Vec::new(), 0);
        while let std::task::Poll::Ready(Some(frame)) =
            std::pin::Pin::new(&mut payload).poll_frame(&mut cx)
        {
            out.extend_from_slice(&frame.unwrap().into_data().unwrap());
            frames += 1;
        }
        assert!(payload.is_end_stream());
        assert_eq!(
            out.len() as u64,
            announced,
            "Content-Length is what is sent"
        );
        (out, frames)
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_stable_part_is_written_out_per_scrape_not_kept() {
        let exposition = Exposition::default();
        let stable: Vec<u8> = (0..)
            .flat_map(|i| format!("metric{{tenant=\"t{i}\"}} {i}\n").into_bytes())
            .take(KEEP_WHOLE_UP_TO + 1)
            .collect();
        let source: Arc<dyn Source> = Arc::new(stable.clone());
        let snapshot = exposition.snapshot(
            1,
            Instant::now(),
            || Arc::clone(&source),
            || b"live 1\n".to_vec(),
        );
        assert!(snapshot.stable.plain.is_none(), "not kept whole");
        let mut expected = stable.clone();
        expected.extend_from_slice(b"live 1\n");
        let (body, frames) = sent(snapshot.plain_parts());
        assert!(body == expected, "the written-out body is the text");
        assert!(
            frames > KEEP_WHOLE_UP_TO / PIECE,
            "sent in pieces: {frames}"
        );
        assert!(snapshot.plain() == expected);
        assert!(snapshot.plain_parts().concat() == expected);
        assert_eq!(gunzip(&snapshot.gzip()), expected);

        let small = exposition.snapshot(
            2,
            Instant::now(),
            || Arc::new(b"small\n".to_vec()),
            Vec::new,
        );
        assert!(small.stable.plain.is_some(), "a small one is kept whole");
        assert_eq!(sent(small.plain_parts()), (b"small\n".to_vec(), 1));
    }

    #[tokio::test]
    async fn hyper_sends_a_written_out_body_with_its_exact_length() {
        let stable: Vec<u8> = (0..)
            .flat_map(|i| format!("metric{{tenant=\"t{i}\"}} {i}\n").into_bytes())
            .take(KEEP_WHOLE_UP_TO + PIECE / 2)
            .collect();
        let source: Arc<dyn Source> = Arc::new(stable.clone());
        let snapshot =
            Exposition::default().snapshot(1, Instant::now(), || source, || b"live\n".to_vec());
        assert!(snapshot.stable.plain.is_none());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(move |_| {
                let body = snapshot.plain_parts();
                async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(body)) }
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
        });
        let answer = reqwest::get(format!("http://{address}/")).await.unwrap();
        let length = answer.content_length();
        let body = answer.bytes().await.unwrap();
        let mut expected = stable;
        expected.extend_from_slice(b"live\n");
        assert_eq!(length, Some(expected.len() as u64), "Content-Length");
        assert!(body[..] == expected[..], "the body as sent");
        server.abort();
    }

    #[test]
    fn accept_encoding_is_parsed() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("identity, gzip;q=0.5"));
        assert!(accepts_gzip("GZIP"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("deflate, br"));
        assert!(!accepts_gzip(""));
    }
}
