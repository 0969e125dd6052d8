//! Every report kind's beta JSON parser over arbitrary bytes: the input is split into pages at
//! the ASCII record separator (0x1E, as in JSON text sequences), each page fed in turn. Never a
//! panic, and the same pages always give the same result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use office365_activations_exporter::reports::{Encoded, Kind, ParseError, KINDS};

fn parse(kind: &Kind, pages: &[&[u8]]) -> Result<(Encoded, Vec<Option<String>>), ParseError> {
    let mut parser = (kind.parser)();
    let mut links = Vec::new();
    for page in pages {
        links.push(parser.json_page(page)?);
    }
    Ok((parser.finish("fuzz")?, links))
}

fuzz_target!(|data: &[u8]| {
    let pages: Vec<&[u8]> = data.split(|b| *b == 0x1E).collect();
    for kind in KINDS {
        let first = parse(kind, &pages);
        if let Ok((encoded, _)) = &first {
            assert_eq!(encoded.families.len(), kind.families.len());
            assert_eq!(encoded.refresh_date.is_some(), encoded.rows > 0);
        }
        assert_eq!(
            first,
            parse(kind, &pages),
            "{}: not deterministic",
            kind.name
        );
    }
});
