//! Every report kind's CSV parser over arbitrary bytes, fed whole and in pseudo-random chunks
//! (derived from the input, so a seed file is a plain CSV body): never a panic, and the chunked
//! result (gauges or error) is the whole-body result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use office365_activations_exporter::reports::{Encoded, Kind, ParseError, KINDS};

/// A tenant label that needs escaping, to exercise the encoders too.
const TENANT: &str = "fuzz \"tenant\"\\\n";

fn parse<'a>(kind: &Kind, chunks: impl Iterator<Item = &'a [u8]>) -> Result<Encoded, ParseError> {
    let mut parser = (kind.parser)();
    for chunk in chunks {
        parser.csv(chunk)?;
    }
    parser.finish(TENANT)
}

/// Chunk boundaries from a xorshift seeded by the body's FNV-1a hash.
fn chunks(body: &[u8]) -> Vec<&[u8]> {
    let mut state = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Mostly tiny chunks (split BOMs, CRLFs, UTF-8 sequences, quotes), sometimes larger.
        let max = if state % 4 == 0 { 256 } else { 4 };
        let size = (1 + (state >> 8) as usize % max).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        out.push(chunk);
        rest = tail;
    }
    out
}

fuzz_target!(|body: &[u8]| {
    let split = chunks(body);
    for kind in KINDS {
        let whole = parse(kind, std::iter::once(body));
        let chunked = parse(kind, split.iter().copied());
        assert_eq!(whole, chunked, "{}: chunking changed the result", kind.name);
        if let Ok(encoded) = &whole {
            assert_eq!(encoded.families.len(), kind.families.len());
            assert_eq!(encoded.refresh_date.is_some(), encoded.rows > 0);
        }
    }
});
