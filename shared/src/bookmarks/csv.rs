//! CSV with a header line naming a `url` column (any case; any other columns, quoted commas and
//! newlines), and optionally a `title` (or `name`) column.
//!
//! Read with `csv-core`, the allocation-free parser under the `csv` crate: the caller owns the
//! record buffers, so a record longer than [`MAX_LINE_BYTES`] (an unclosed quote swallowing the
//! rest of the file, say) is skipped and reported without being held in memory, which `csv`'s
//! growing `ByteRecord` cannot promise.

use std::io::{self, BufRead};

use csv_core::ReadRecordResult;

use super::{Entry, Item, MAX_LINE_BYTES, ReadError, Rejected, clean_title, invalid_utf8, shorten, strip_bom};

/// Most fields of one record.
const MAX_FIELDS: usize = 4096;
/// First size of the record buffer (it grows up to [`MAX_LINE_BYTES`]).
const FIRST_RECORD_BYTES: usize = 4096;
/// First size of the field-end buffer (it grows up to [`MAX_FIELDS`]).
const FIRST_FIELDS: usize = 32;

/// The header's column names: trimmed, lower-case, invalid UTF-8 replaced.
pub fn header_columns(line: &[u8]) -> Vec<String> {
    let mut reader = RecordReader::new(strip_bom(line));
    match reader.next_record() {
        Ok(Some(record)) if !record.overflow => reader.fields().map(column_name).collect(),
        _ => Vec::new(),
    }
}

fn column_name(field: &[u8]) -> String {
    String::from_utf8_lossy(field).trim().to_lowercase()
}

/// Where one record starts, and whether it fit.
#[derive(Debug, Clone, Copy)]
struct RecordInfo {
    line: u64,
    overflow: bool,
}

/// Records of a CSV input in bounded buffers.
#[derive(Debug)]
struct RecordReader<R> {
    inner: R,
    core: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    /// Where the rest of an over-long record goes (and is dropped).
    scratch: Vec<u8>,
    scratch_ends: Vec<usize>,
    out_len: usize,
    ends_len: usize,
    /// `\n` bytes consumed so far.
    newlines: u64,
}

impl<R: BufRead> RecordReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            core: csv_core::Reader::new(),
            out: vec![0; FIRST_RECORD_BYTES],
            ends: vec![0; FIRST_FIELDS],
            scratch: vec![0; 1024],
            scratch_ends: vec![0; 64],
            out_len: 0,
            ends_len: 0,
            newlines: 0,
        }
    }

    /// The next record, or `None` at the end.
    fn next_record(&mut self) -> io::Result<Option<RecordInfo>> {
        // Blank lines between records: skipped here rather than by the parser, so that the line a
        // record starts on is known.
        loop {
            let available = match self.inner.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let skip = available.iter().take_while(|b| matches!(b, b'\n' | b'\r')).count();
            self.newlines += count_newlines(&available[..skip]);
            let whole = skip == available.len() && skip > 0;
            self.inner.consume(skip);
            if !whole {
                break;
            }
        }
        let line = self.newlines + 1;
        self.out_len = 0;
        self.ends_len = 0;
        let mut overflow = false;
        loop {
            let input = match self.inner.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let (result, read, written, ended) = if overflow {
                self.core.read_record(input, &mut self.scratch, &mut self.scratch_ends)
            } else {
                self.core
                    .read_record(input, &mut self.out[self.out_len..], &mut self.ends[self.ends_len..])
            };
            self.newlines += count_newlines(&input[..read]);
            self.inner.consume(read);
            if !overflow {
                self.out_len += written;
                self.ends_len += ended;
            }
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull if !overflow => {
                    if self.out.len() < MAX_LINE_BYTES {
                        let grown = (self.out.len() * 2).min(MAX_LINE_BYTES);
                        self.out.resize(grown, 0);
                    } else {
                        overflow = true;
                    }
                }
                ReadRecordResult::OutputEndsFull if !overflow => {
                    if self.ends.len() < MAX_FIELDS {
                        let grown = (self.ends.len() * 2).min(MAX_FIELDS);
                        self.ends.resize(grown, 0);
                    } else {
                        overflow = true;
                    }
                }
                // Once overflowing, the scratch buffers are simply reused.
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {}
                ReadRecordResult::Record => return Ok(Some(RecordInfo { line, overflow })),
                ReadRecordResult::End => return Ok(None),
            }
        }
    }

    /// The fields of the last record read (not meaningful after an overflow).
    fn fields(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends[..self.ends_len].iter().map(move |&end| {
            let end = end.min(self.out_len);
            let field = &self.out[start.min(end)..end];
            start = end;
            field
        })
    }

    /// The `index`th field of the last record.
    fn field(&self, index: usize) -> Option<&[u8]> {
        self.fields().nth(index)
    }

    /// The last record for display: its fields joined by commas, shortened (after an overflow:
    /// the start that was kept).
    fn shown(&self, overflow: bool) -> String {
        if overflow {
            return super::shown(&self.out[..self.out_len]);
        }
        let fields: Vec<String> = self.fields().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
        shorten(&fields.join(","))
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

/// The CSV format: a header naming a `url` column, then one link per record.
#[derive(Debug)]
pub struct CsvFormat<R> {
    records: RecordReader<R>,
    url: usize,
    title: Option<usize>,
    /// No header at all (an empty input).
    empty: bool,
}

impl<R: BufRead> CsvFormat<R> {
    /// Reads the header of `inner`.
    ///
    /// # Errors
    ///
    /// [`ReadError::NoUrlColumn`] when the header names no `url` column; I/O errors.
    pub fn new(inner: R) -> Result<Self, ReadError> {
        let mut records = RecordReader::new(inner);
        let Some(header) = records.next_record()? else {
            return Ok(Self {
                records,
                url: 0,
                title: None,
                empty: true,
            });
        };
        let columns: Vec<String> = if header.overflow {
            Vec::new()
        } else {
            records.fields().map(column_name).collect()
        };
        let url = columns
            .iter()
            .position(|c| c == "url")
            .ok_or_else(|| ReadError::NoUrlColumn(records.shown(header.overflow)))?;
        let title = columns
            .iter()
            .position(|c| c == "title")
            .or_else(|| columns.iter().position(|c| c == "name"));
        Ok(Self {
            records,
            url,
            title,
            empty: false,
        })
    }

    fn item(&self, record: RecordInfo) -> Option<Item> {
        let rejected = |reason: String| {
            Some(Item::Rejected(Rejected {
                line: record.line,
                input: self.records.shown(record.overflow),
                reason,
            }))
        };
        if record.overflow {
            return rejected(format!(
                "record is longer than the limit of {} KiB or {MAX_FIELDS} fields",
                MAX_LINE_BYTES / 1024
            ));
        }
        if self.records.fields().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            return None;
        }
        let url = match self.records.field(self.url).map(std::str::from_utf8) {
            None => return rejected("no url column in this row".to_owned()),
            Some(Err(e)) => return rejected(format!("url column: {}", invalid_utf8(&e))),
            Some(Ok(url)) if url.trim().is_empty() => return rejected("the url column is empty".to_owned()),
            Some(Ok(url)) => url.trim().to_owned(),
        };
        let title = match self.title.and_then(|i| self.records.field(i)).map(std::str::from_utf8) {
            None => None,
            Some(Err(e)) => return rejected(format!("title column: {}", invalid_utf8(&e))),
            Some(Ok(title)) => clean_title(title),
        };
        Some(Item::Entry(Entry {
            line: record.line,
            url,
            title,
        }))
    }
}

impl<R: BufRead> Iterator for CsvFormat<R> {
    type Item = Result<Item, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.empty {
            return None;
        }
        loop {
            let record = match self.records.next_record() {
                Ok(Some(record)) => record,
                Ok(None) => return None,
                Err(e) => return Some(Err(e.into())),
            };
            if let Some(item) = self.item(record) {
                return Some(Ok(item));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8]) -> Vec<Item> {
        CsvFormat::new(input)
            .expect("header")
            .map(|i| i.expect("item"))
            .collect()
    }

    fn entry(line: u64, url: &str, title: Option<&str>) -> Item {
        Item::Entry(Entry {
            line,
            url: url.into(),
            title: title.map(Into::into),
        })
    }

    #[test]
    fn the_url_and_title_columns_are_found_by_name() {
        let input = b"id,Title,note,URL\r\n1,\"Hello, world\",\"a \"\"quoted\"\", note\",https://a.example/\r\n\r\n2,,x,https://b.example/\n";
        assert_eq!(
            read(input),
            [
                entry(2, "https://a.example/", Some("Hello, world")),
                entry(4, "https://b.example/", None)
            ]
        );
    }

    #[test]
    fn a_quoted_newline_keeps_the_line_numbers_right() {
        let input = b"url,title\nhttps://a.example/,\"two\nlines\"\nhttps://b.example/,B\n";
        assert_eq!(
            read(input),
            [
                entry(2, "https://a.example/", Some("two lines")),
                entry(4, "https://b.example/", Some("B"))
            ]
        );
    }

    #[test]
    fn bad_rows_are_rejected_and_the_rest_read() {
        let mut input =
            b"\xef\xbb\xbfurl,name\nhttps://a.example/\xff,A\nhttps://b.example/,B\xfe\n,only a title\nshort\n"
                .to_vec();
        input.extend_from_slice(b"https://c.example/,\"");
        input.extend_from_slice(&vec![b'x'; MAX_LINE_BYTES * 2]);
        input.extend_from_slice(b"\"\nhttps://d.example/,D\n");
        let items = read(&input);
        let lines: Vec<(u64, String)> = items
            .iter()
            .map(|i| match i {
                Item::Entry(e) => (e.line, e.url.clone()),
                Item::Rejected(r) => (r.line, r.reason.clone()),
            })
            .collect();
        assert_eq!(lines[0], (2, "url column: invalid UTF-8 at byte 19".to_owned()));
        assert_eq!(lines[1], (3, "title column: invalid UTF-8 at byte 2".to_owned()));
        assert_eq!(lines[2], (4, "the url column is empty".to_owned()));
        assert_eq!(
            lines[3],
            (5, "short".to_owned()),
            "a row without the title column still has a URL"
        );
        assert_eq!(lines[4].0, 6);
        assert!(lines[4].1.contains("longer than the limit"), "{}", lines[4].1);
        assert_eq!(lines[5], (7, "https://d.example/".to_owned()));
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn a_header_without_url_is_refused_and_an_empty_file_is_empty() {
        let err = CsvFormat::new(&b"link,title\nhttps://a.example/,A\n"[..]).expect_err("refused");
        assert!(err.to_string().contains("link,title"), "{err}");
        assert_eq!(read(b""), []);
        assert_eq!(header_columns(b" Id , URL\r\n"), ["id", "url"]);
    }

    #[test]
    fn a_row_shorter_than_the_url_column_is_rejected() {
        let items = read(b"title,url\nonly title\n");
        assert!(matches!(&items[..], [Item::Rejected(r)] if r.line == 2 && r.reason == "no url column in this row"));
    }
}
