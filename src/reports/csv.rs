//! A streaming CSV reader for Graph's report downloads, fed chunk by chunk as the body arrives.
//!
//! Strict about what matters (a header row, equal field counts, UTF-8) and lenient about what
//! Graph is known to vary (a UTF-8 byte order mark, CRLF or LF, quoted fields, blank lines,
//! surrounding spaces). Only the current record is held, so a report of any size costs the same
//! memory; a field or record longer than [`MAX_RECORD`] is refused rather than buffered.

use super::ParseError;

/// The longest record (bytes) and the most fields accepted: a report row is a few hundred bytes
/// and a dozen fields; anything far beyond is not a report.
pub const MAX_RECORD: usize = 64 * 1024;
/// See [`MAX_RECORD`].
pub const MAX_FIELDS: usize = 1024;

/// The header row: column names, matched case-insensitively.
#[derive(Debug)]
pub struct Header {
    /// The names, trimmed, in file order.
    names: Vec<String>,
}

impl Header {
    /// The position of a required column.
    pub fn column(&self, name: &'static str) -> Result<usize, ParseError> {
        self.optional(name)
            .ok_or_else(|| ParseError::MissingColumn(name, self.names.join(",")))
    }

    /// The position of a column that older reports lack.
    pub fn optional(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|h| h.eq_ignore_ascii_case(name))
    }
}

/// One record, with its number for error messages.
pub struct Row<'a> {
    /// 1-based record number counting the header as 1.
    pub number: u64,
    /// The fields, trimmed.
    fields: &'a [&'a str],
}

impl Row<'_> {
    /// The field at `col` (columns come from [`Header`], so always present).
    pub fn get(&self, col: usize) -> &str {
        self.fields.get(col).copied().unwrap_or("")
    }

    /// A non-negative integer count in column `col`, named `what` in the error.
    pub fn count(&self, col: usize, what: &str) -> Result<u64, ParseError> {
        super::parse_count(self.get(col), what, self.number)
    }

    /// An error about this row.
    pub fn invalid(&self, detail: String) -> ParseError {
        ParseError::InvalidValue {
            row: self.number,
            detail,
        }
    }
}

/// What the reader calls back with.
pub trait Rows {
    /// The header row, once.
    fn header(&mut self, header: &Header) -> Result<(), ParseError>;
    /// Each record after it.
    fn row(&mut self, row: &Row<'_>) -> Result<(), ParseError>;
}

/// Where the reader is in the body.
#[derive(Default)]
enum Start {
    /// Nothing but white space (and a byte order mark) seen yet; holds those bytes.
    #[default]
    Sniffing,
    /// The body looked like CSV; records are being read.
    Reading,
}

/// The reader's state between chunks.
pub struct CsvStream {
    /// The push parser.
    reader: csv_core::Reader,
    /// Before the first non-blank byte: what the body starts with.
    start: Start,
    /// Bytes held while sniffing (a byte order mark split across chunks, leading blanks).
    prefix: Vec<u8>,
    /// The current record's field bytes.
    out: Vec<u8>,
    /// How much of `out` is used.
    out_len: usize,
    /// The current record's field end offsets.
    ends: Vec<usize>,
    /// How many of `ends` are used.
    ends_len: usize,
    /// The header, once read.
    header: Option<Header>,
    /// Records read, the header included.
    records: u64,
    /// The reader saw the end of the data.
    ended: bool,
}

impl Default for CsvStream {
    fn default() -> Self {
        CsvStream {
            reader: csv_core::Reader::new(),
            start: Start::Sniffing,
            prefix: Vec::new(),
            out: vec![0; 1024],
            out_len: 0,
            ends: vec![0; 32],
            ends_len: 0,
            header: None,
            records: 0,
            ended: false,
        }
    }
}

impl CsvStream {
    /// Whether the header row was read.
    pub fn has_header(&self) -> bool {
        self.header.is_some()
    }

    /// Feeds the next chunk of the body.
    pub fn feed(&mut self, chunk: &[u8], rows: &mut dyn Rows) -> Result<(), ParseError> {
        if let Start::Sniffing = self.start {
            self.prefix.extend_from_slice(chunk);
            let body = self.prefix.strip_prefix(b"\xEF\xBB\xBF");
            let mut body = match body {
                Some(rest) => rest,
                // A byte order mark may still be arriving.
                None if b"\xEF\xBB\xBF".starts_with(&self.prefix) => return Ok(()),
                None => &self.prefix[..],
            };
            // A doubled mark too. Left to csv_core, which strips one more itself, it was stripped
            // only when whole in csv_core's first input, and an input that is only a mark ended
            // the data there: chunking changed the result.
            while let Some(rest) = body.strip_prefix(b"\xEF\xBB\xBF") {
                body = rest;
            }
            // Leading blanks (and the byte order mark) are held, so more than a record's worth
            // is refused; counted the same whether they came in one chunk or many.
            let first = body.iter().position(|b| !b.is_ascii_whitespace());
            let blanks = self.prefix.len() - body.len() + first.unwrap_or(body.len());
            if blanks > MAX_RECORD {
                return Err(ParseError::NotCsv(format!(
                    "body starts with more than {MAX_RECORD} bytes of white space"
                )));
            }
            // The start of a further mark is held until it is whole (and stripped above).
            if first == Some(0) && body.len() < 3 && b"\xEF\xBB\xBF".starts_with(body) {
                return Ok(());
            }
            match first.map(|i| body[i]) {
                None => return Ok(()),
                Some(b'<') => return Err(ParseError::NotCsv("body looks like HTML or XML".into())),
                Some(b'{') | Some(b'[') => {
                    return Err(ParseError::NotCsv("body looks like JSON".into()))
                }
                Some(_) => {}
            }
            let body = body.to_vec();
            self.prefix = Vec::new();
            self.start = Start::Reading;
            return self.read(&body, rows);
        }
        self.read(chunk, rows)
    }

    /// The body is complete.
    pub fn end(&mut self, rows: &mut dyn Rows) -> Result<(), ParseError> {
        if let Start::Sniffing = self.start {
            return Err(ParseError::NotCsv("empty body".into()));
        }
        if !self.ended {
            self.read(&[], rows)?;
        }
        if self.header.is_none() {
            return Err(ParseError::NotCsv("empty body".into()));
        }
        Ok(())
    }

    /// Runs the push parser over `input` (empty: the end of the data).
    fn read(&mut self, mut input: &[u8], rows: &mut dyn Rows) -> Result<(), ParseError> {
        use csv_core::ReadRecordResult as R;
        let at_end = input.is_empty();
        loop {
            // An empty input tells the parser the data ended: never pass one before the end.
            if input.is_empty() && !at_end {
                return Ok(());
            }
            let (result, nin, nout, nend) = self.reader.read_record(
                input,
                &mut self.out[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            input = &input[nin..];
            self.out_len += nout;
            self.ends_len += nend;
            match result {
                R::InputEmpty => {}
                R::OutputFull => {
                    if self.out.len() >= MAX_RECORD {
                        return Err(self.too_long("bytes", MAX_RECORD));
                    }
                    let len = self.out.len() * 2;
                    self.out.resize(len, 0);
                }
                R::OutputEndsFull => {
                    if self.ends.len() >= MAX_FIELDS {
                        return Err(self.too_long("fields", MAX_FIELDS));
                    }
                    let len = self.ends.len() * 2;
                    self.ends.resize(len, 0);
                }
                R::Record => {
                    self.records += 1;
                    let result = self.record(rows);
                    self.out_len = 0;
                    self.ends_len = 0;
                    result?;
                }
                R::End => {
                    self.ended = true;
                    return Ok(());
                }
            }
        }
    }

    fn too_long(&self, what: &str, limit: usize) -> ParseError {
        ParseError::InvalidValue {
            row: self.records + 1,
            detail: format!("malformed CSV record: more than {limit} {what}"),
        }
    }

    /// Hands the record just read to `rows`.
    fn record(&mut self, rows: &mut dyn Rows) -> Result<(), ParseError> {
        let number = self.records;
        let data = &self.out[..self.out_len];
        let text = std::str::from_utf8(data).map_err(|e| ParseError::InvalidValue {
            row: number,
            detail: format!("malformed CSV record: invalid UTF-8 ({e})"),
        })?;
        let mut fields: Vec<&str> = Vec::with_capacity(self.ends_len);
        let mut start = 0;
        for &end in &self.ends[..self.ends_len] {
            // Field ends fall on the boundaries of the bytes written, which are whole UTF-8
            // sequences of valid input; `get` keeps this panic-free whatever the input.
            fields.push(text.get(start..end).unwrap_or("").trim());
            start = end;
        }
        match &self.header {
            None => {
                let header = Header {
                    names: fields.iter().map(|f| (*f).to_owned()).collect(),
                };
                rows.header(&header)?;
                self.header = Some(header);
                Ok(())
            }
            Some(header) => {
                if fields.len() != header.names.len() {
                    return Err(ParseError::InvalidValue {
                        row: number,
                        detail: format!(
                            "malformed CSV record: found record with {} fields, but the header has {}",
                            fields.len(),
                            header.names.len()
                        ),
                    });
                }
                rows.row(&Row {
                    number,
                    fields: &fields,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what the reader calls back with.
    #[derive(Default)]
    struct Collect {
        header: Vec<String>,
        rows: Vec<(u64, Vec<String>)>,
    }

    impl Rows for Collect {
        fn header(&mut self, header: &Header) -> Result<(), ParseError> {
            self.header = header.names.clone();
            Ok(())
        }
        fn row(&mut self, row: &Row<'_>) -> Result<(), ParseError> {
            let fields = row.fields.iter().map(|f| (*f).to_owned()).collect();
            self.rows.push((row.number, fields));
            Ok(())
        }
    }

    fn read_in_chunks(body: &[u8], size: usize) -> Result<Collect, ParseError> {
        let mut stream = CsvStream::default();
        let mut collect = Collect::default();
        for chunk in body.chunks(size.max(1)) {
            stream.feed(chunk, &mut collect)?;
        }
        stream.end(&mut collect)?;
        Ok(collect)
    }

    #[test]
    fn any_chunking_reads_the_same_records() {
        let body = "\u{FEFF}A,B\r\n1,\"x, \"\"y\"\"\"\r\n\r\n2,é\r\n3,z".as_bytes();
        let whole = read_in_chunks(body, body.len()).unwrap();
        assert_eq!(whole.header, ["A", "B"]);
        assert_eq!(
            whole.rows,
            [
                (2, vec!["1".to_owned(), "x, \"y\"".to_owned()]),
                (3, vec!["2".to_owned(), "é".to_owned()]),
                (4, vec!["3".to_owned(), "z".to_owned()]),
            ]
        );
        for size in 1..body.len() {
            let chunked = read_in_chunks(body, size).unwrap();
            assert_eq!(
                (chunked.header, chunked.rows),
                (whole.header.clone(), whole.rows.clone()),
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_split_byte_order_mark_is_still_stripped() {
        let body = b"\xEF\xBB\xBF<html>";
        for size in 1..=3 {
            let err = read_in_chunks(body, size).err().unwrap();
            assert_eq!(err.reason(), "not_csv", "{size}");
        }
        let ok = read_in_chunks(b"\xEF\xBB\xBFA\n1\n", 1).unwrap();
        assert_eq!(ok.header, ["A"]);
    }

    #[test]
    fn empty_blank_and_over_long_bodies_are_refused() {
        for body in [&b""[..], b"\r\n", b"\xEF\xBB\xBF", b"   \n\n"] {
            assert_eq!(read_in_chunks(body, 2).err().unwrap().reason(), "not_csv");
        }
        let long = format!("A\n{}\n", "x".repeat(MAX_RECORD + 1));
        let err = read_in_chunks(long.as_bytes(), 4096).err().unwrap();
        assert_eq!(err.reason(), "invalid_value", "{err}");
        let wide = format!("A\n{}\n", ",".repeat(MAX_FIELDS + 1));
        assert_eq!(
            read_in_chunks(wide.as_bytes(), 4096)
                .err()
                .unwrap()
                .reason(),
            "invalid_value"
        );
    }

    #[test]
    fn long_leading_white_space_is_refused_whatever_the_chunking() {
        // Found while writing the chunk-equivalence fuzz target: a body of more than MAX_RECORD
        // blanks and then CSV was refused in small chunks but read in one.
        let body = format!("\u{FEFF}{}A\n1\n", " ".repeat(MAX_RECORD));
        let whole = read_in_chunks(body.as_bytes(), body.len()).err();
        let chunked = read_in_chunks(body.as_bytes(), 1000).err();
        assert_eq!(whole, chunked);
        assert_eq!(whole.map(|e| e.reason()), Some("not_csv"));
        let short = format!("{}A\n1\n", " ".repeat(MAX_RECORD - 3));
        for size in [1000, short.len()] {
            assert_eq!(
                read_in_chunks(short.as_bytes(), size).unwrap().header,
                ["A"]
            );
        }
    }

    #[test]
    fn a_doubled_byte_order_mark_reads_the_same_whatever_the_chunking() {
        // Found by the report_csv fuzz target (fuzz/artifacts crash-3921d7cf): with two marks,
        // csv_core stripped the second only when it came whole in one chunk, so the first column
        // was "Report Refresh Date" or "\u{FEFF}Report Refresh Date" depending on the chunks.
        let body = b"\xEF\xBB\xBF\xEF\xBB\xBFA,B\n1,2\n";
        for size in 1..=body.len() {
            assert_eq!(
                read_in_chunks(body, size).unwrap().header,
                ["A", "B"],
                "{size}"
            );
        }
        for size in 1..=5 {
            let err = read_in_chunks(b"\xEF\xBB\xBF\xEF\xBB", size).err();
            assert_eq!(err.map(|e| e.reason()), Some("not_csv"), "{size}");
        }
        // Found by report_csv next (crash-dd11f7d7): a chunk ending just after the second mark
        // gave csv_core an input that was only the mark, which it took for the end of the data.
        let body = b"\xEF\xBB\xBF\xEF\xBB\xBF\xEF\xBB\xBFA\n\xEFo\n";
        let whole = read_in_chunks(body, body.len()).err();
        assert_eq!(whole.as_ref().map(|e| e.reason()), Some("invalid_value"));
        for size in 1..body.len() {
            assert_eq!(read_in_chunks(body, size).err(), whole, "{size}");
        }
    }

    #[test]
    fn ragged_records_and_invalid_utf8_are_refused() {
        let err = read_in_chunks(b"A,B\n1\n", 3).err().unwrap();
        assert_eq!(
            err,
            ParseError::InvalidValue {
                row: 2,
                detail: "malformed CSV record: found record with 1 fields, but the header has 2"
                    .into()
            }
        );
        let err = read_in_chunks(b"A\n\xFF\xFE\n", 3).err().unwrap();
        assert_eq!(err.reason(), "invalid_value");
    }
}
