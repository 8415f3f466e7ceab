//! Bytes to text: the charset a page declares (BOM → `Content-Type` → `<meta charset>`, found
//! the way the HTML spec's prescan finds it), else the one its bytes look like (`chardetng`), else
//! UTF-8; decoded with `encoding_rs`, lossily, never failing.

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::{Encoding, REPLACEMENT, UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1252, X_USER_DEFINED};
use url::{Host, Url};

use super::head::MAX_HEAD_BYTES;
use super::{is_space, skip_spaces};

/// How much of the body the `<meta charset>` prescan looks at, as in the HTML spec: a declaration
/// further down does not count for browsers either.
const PRESCAN_BYTES: usize = 1024;

/// Decodes `body` to text. Charset from BOM → `Content-Type` header charset → `<meta charset>` /
/// `<meta http-equiv="Content-Type" content="...charset=...">` (prescan of the first 1024 bytes,
/// like the HTML spec) → detected from the bytes (`chardetng`, when the page declares nothing and
/// is not pure ASCII) → UTF-8, with `encoding_rs` (lossy replacement, never an error).
///
/// Labels are resolved the WHATWG way (`iso-8859-1` and `us-ascii` mean windows-1252, which is what
/// pages labelled so really are). One deviation from browsers: a label meaning the "replacement"
/// encoding (`iso-2022-kr` and friends) is ignored instead of turning the page into a single U+FFFD;
/// that rule protects script execution, which we don't do, and it would only cost us the metadata.
///
/// Detection here guesses as for a `.com` page; [`decode_page`] uses the page's own top-level
/// domain, which settles short undeclared pages (a `.ru` page is more likely windows-1251).
pub fn decode_html(body: &[u8], content_type: Option<&str>) -> String {
    decode(body, content_type, None)
}

/// [`decode_html`] for a page fetched from `page_url` (the final URL after redirects): its
/// top-level domain steers the detection of an undeclared charset, as it does in browsers.
pub fn decode_page(body: &[u8], content_type: Option<&str>, page_url: &Url) -> String {
    decode(body, content_type, top_level_domain(page_url))
}

fn decode(body: &[u8], content_type: Option<&str>, tld: Option<&str>) -> String {
    let encoding = sniff_encoding(body, content_type, tld);
    // `decode` strips a BOM itself (and a BOM is what chose the encoding when there is one).
    let (text, _, _) = encoding.decode(body);
    text.into_owned()
}

fn sniff_encoding(body: &[u8], content_type: Option<&str>, tld: Option<&str>) -> &'static Encoding {
    Encoding::for_bom(body)
        .map(|(encoding, _)| encoding)
        .or_else(|| content_type.and_then(charset_from_content_type))
        .or_else(|| prescan_encoding(&body[..body.len().min(PRESCAN_BYTES)]))
        .or_else(|| detect_encoding(body, tld))
        .unwrap_or(UTF_8)
}

/// The encoding an undeclared page's bytes look like, or `None` when they are pure ASCII (which
/// every candidate reads the same way: UTF-8 then).
///
/// UTF-8 may be the answer, unlike in browsers (which refuse to detect it so that authors keep
/// declaring it): a page that is valid UTF-8 is read as UTF-8. The body is a prefix (cut at the
/// head's end or at [`MAX_HEAD_BYTES`]), so a character cut in two at its end does not count
/// against UTF-8 (the detector is fed it as unfinished). ISO-2022-JP, a 7-bit encoding that only
/// a pure-ASCII body could be, is never guessed: such bodies are UTF-8 here.
///
/// Valid UTF-8 is told before the detector runs: `chardetng` answers UTF-8 for it too, but takes
/// 13 ms over 512 KiB of Cyrillic UTF-8 (18 ms in windows-1251; release build) where the UTF-8
/// check takes 0.03 ms, so only bodies that are not UTF-8 pay for detection.
fn detect_encoding(body: &[u8], tld: Option<&str>) -> Option<&'static Encoding> {
    let body = &body[..body.len().min(MAX_HEAD_BYTES)];
    let utf8 = match std::str::from_utf8(body) {
        Ok(_) => true,
        // `error_len` is `None` when the input merely ends inside a character.
        Err(error) => error.error_len().is_none(),
    };
    if utf8 {
        return (!body.is_ascii()).then_some(UTF_8);
    }
    let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
    detector.feed(body, false);
    Some(detector.guess(tld.map(str::as_bytes), Utf8Detection::Allow))
}

/// The rightmost label of `url`'s host, as `chardetng` wants it (lower-case ASCII, Punycode, no
/// dot; it panics on anything else, so anything else is `None`, meaning generic).
fn top_level_domain(url: &Url) -> Option<&str> {
    let Some(Host::Domain(domain)) = url.host() else {
        return None;
    };
    let label = domain.rsplit('.').next()?;
    let plain = !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    plain.then_some(label)
}

/// The `charset` parameter of a `Content-Type` value, if it names an encoding we can use.
fn charset_from_content_type(content_type: &str) -> Option<&'static Encoding> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        usable(Encoding::for_label(value.as_bytes()))
    })
}

/// Drops the "replacement" encoding (see [`decode_html`]).
fn usable(encoding: Option<&'static Encoding>) -> Option<&'static Encoding> {
    encoding.filter(|e| *e != REPLACEMENT)
}

/// The HTML spec's "prescan a byte stream to determine its encoding" over `bytes` (the first
/// [`PRESCAN_BYTES`] of the body): finds the first `<meta charset>` or `<meta http-equiv=
/// "Content-Type" content="…charset=…">`, skipping comments and other tags' attributes the way a
/// browser does, so `charset=` inside a comment or a `<script>` attribute is not mistaken for one.
fn prescan_encoding(bytes: &[u8]) -> Option<&'static Encoding> {
    Prescan { bytes, pos: 0 }.run().ok().flatten()
}

/// The input ran out mid-construct: the spec then gives up on the prescan.
#[derive(Debug)]
struct EndOfInput;

type Scan<T> = Result<T, EndOfInput>;

/// A cursor over the prescanned bytes; the names of the steps follow the spec.
#[derive(Debug)]
struct Prescan<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// An attribute as the prescan sees it: name and value, ASCII lower-cased.
#[derive(Debug)]
struct Attribute {
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Prescan<'_> {
    fn run(&mut self) -> Scan<Option<&'static Encoding>> {
        while self.pos < self.bytes.len() {
            let rest = &self.bytes[self.pos..];
            if rest.starts_with(b"<!--") {
                self.skip_comment()?;
            } else if starts_with_ignore_case(rest, b"<meta") && rest.get(5).is_some_and(|&b| is_space(b) || b == b'/')
            {
                self.pos += 6;
                if let Some(encoding) = self.meta()? {
                    return Ok(Some(encoding));
                }
            } else if starts_tag(rest) {
                self.skip_tag()?;
            } else if rest.starts_with(b"<!") || rest.starts_with(b"</") || rest.starts_with(b"<?") {
                self.pos = self.find_from(self.pos + 1, |b| b == b'>')?;
            }
            self.pos += 1;
        }
        Ok(None)
    }

    fn byte(&self) -> Scan<u8> {
        self.bytes.get(self.pos).copied().ok_or(EndOfInput)
    }

    /// Index of the first byte from `from` on that satisfies `pred`.
    fn find_from(&self, from: usize, pred: impl Fn(u8) -> bool) -> Scan<usize> {
        let rest = self.bytes.get(from..).ok_or(EndOfInput)?;
        rest.iter().position(|&b| pred(b)).map(|i| from + i).ok_or(EndOfInput)
    }

    /// Leaves `pos` on the `>` of the first `-->` after the `<` (`<!-->` is a whole comment).
    fn skip_comment(&mut self) -> Scan<()> {
        let mut at = self.pos + 2;
        loop {
            at = self.find_from(at + 2, |b| b == b'>')?;
            if self.bytes[at - 2..at] == *b"--" {
                self.pos = at;
                return Ok(());
            }
            at -= 1;
        }
    }

    /// Skips a start or end tag's name and attributes, leaving `pos` on its `>`.
    fn skip_tag(&mut self) -> Scan<()> {
        self.pos = self.find_from(self.pos, |b| is_space(b) || b == b'>')?;
        while self.attribute()?.is_some() {}
        Ok(())
    }

    /// After `<meta `: the encoding this tag declares, if any.
    fn meta(&mut self) -> Scan<Option<&'static Encoding>> {
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut got_pragma = false;
        let mut need_pragma: Option<bool> = None;
        // `None` is the spec's "null", `Some(None)` its "failure".
        let mut charset: Option<Option<&'static Encoding>> = None;
        while let Some(attr) = self.attribute()? {
            if seen.contains(&attr.name) {
                continue;
            }
            match attr.name.as_slice() {
                b"http-equiv" => got_pragma |= attr.value == b"content-type",
                b"content" => {
                    if let (None, Some(found)) = (charset, charset_from_meta_content(&attr.value)) {
                        charset = Some(Some(found));
                        need_pragma = Some(true);
                    }
                }
                b"charset" => {
                    charset = Some(Encoding::for_label(&attr.value));
                    need_pragma = Some(false);
                }
                _ => {}
            }
            seen.push(attr.name);
        }
        let declared = match need_pragma {
            None => None,
            Some(true) if !got_pragma => None,
            Some(_) => charset.flatten(),
        };
        Ok(usable(declared).map(|encoding| match encoding {
            e if e == UTF_16BE || e == UTF_16LE => UTF_8,
            e if e == X_USER_DEFINED => WINDOWS_1252,
            e => e,
        }))
    }

    /// The spec's "get an attribute": `None` at the tag's `>`.
    fn attribute(&mut self) -> Scan<Option<Attribute>> {
        while is_space(self.byte()?) || self.byte()? == b'/' {
            self.pos += 1;
        }
        if self.byte()? == b'>' {
            return Ok(None);
        }
        let mut attr = Attribute {
            name: Vec::new(),
            value: Vec::new(),
        };
        // Name.
        loop {
            match self.byte()? {
                b'=' if !attr.name.is_empty() => {
                    self.pos += 1;
                    return self.attribute_value(attr).map(Some);
                }
                b if is_space(b) => break,
                b'/' | b'>' => return Ok(Some(attr)),
                b => attr.name.push(b.to_ascii_lowercase()),
            }
            self.pos += 1;
        }
        // Spaces between the name and a possible `=`.
        while is_space(self.byte()?) {
            self.pos += 1;
        }
        if self.byte()? != b'=' {
            return Ok(Some(attr));
        }
        self.pos += 1;
        self.attribute_value(attr).map(Some)
    }

    /// After the `=`: the value, quoted or not.
    fn attribute_value(&mut self, mut attr: Attribute) -> Scan<Attribute> {
        while is_space(self.byte()?) {
            self.pos += 1;
        }
        match self.byte()? {
            quote @ (b'"' | b'\'') => {
                self.pos += 1;
                let end = self.find_from(self.pos, |b| b == quote)?;
                attr.value
                    .extend(self.bytes[self.pos..end].iter().map(u8::to_ascii_lowercase));
                self.pos = end + 1;
                return Ok(attr);
            }
            b'>' => return Ok(attr),
            _ => {}
        }
        let end = self.find_from(self.pos, |b| is_space(b) || b == b'>')?;
        attr.value
            .extend(self.bytes[self.pos..end].iter().map(u8::to_ascii_lowercase));
        self.pos = end;
        Ok(attr)
    }
}

/// The spec's "extracting a character encoding from a meta element", on a `content` value such as
/// `text/html; charset=windows-1252`.
fn charset_from_meta_content(content: &[u8]) -> Option<&'static Encoding> {
    let mut from = 0;
    loop {
        let found = find_ignore_case(content.get(from..)?, b"charset")?;
        let mut at = skip_spaces(content, from + found + b"charset".len());
        if content.get(at) != Some(&b'=') {
            from = at;
            continue;
        }
        at = skip_spaces(content, at + 1);
        let rest = content.get(at..)?;
        return match rest.first()? {
            &quote @ (b'"' | b'\'') => {
                let inner = rest.get(1..)?;
                let end = inner.iter().position(|&b| b == quote)?;
                Encoding::for_label(&inner[..end])
            }
            _ => {
                let end = rest
                    .iter()
                    .position(|&b| is_space(b) || b == b';')
                    .unwrap_or(rest.len());
                Encoding::for_label(&rest[..end])
            }
        };
    }
}

/// `<` then a letter, or `</` then a letter: a start or end tag.
fn starts_tag(rest: &[u8]) -> bool {
    let name = rest.strip_prefix(b"</").or_else(|| rest.strip_prefix(b"<"));
    name.and_then(|n| n.first()).is_some_and(u8::is_ascii_alphabetic)
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::extract;
    use crate::scrape::test_support::page_url;

    #[test]
    fn iso_8859_1_page_with_charset_only_in_the_content_type_header_decodes() {
        let body = b"<html><head><title>Caf\xe9 cr\xe8me</title></head></html>";
        for content_type in [
            "text/html; charset=ISO-8859-1",
            "text/html;charset=\"latin1\"",
            "text/html; CHARSET=iso-8859-1",
        ] {
            let html = decode_html(body, Some(content_type));
            assert_eq!(
                extract(&html, &page_url()).title.as_deref(),
                Some("Café crème"),
                "{content_type}"
            );
        }
    }

    #[test]
    fn windows_1252_page_with_meta_charset_decodes_curly_quotes() {
        let body =
            b"<html><head><meta charset=\"windows-1252\"><title>\x93Quoted\x94 \x96 it\x92s</title></head></html>";
        let html = decode_html(body, Some("text/html"));
        assert_eq!(
            extract(&html, &page_url()).title.as_deref(),
            Some("\u{201c}Quoted\u{201d} \u{2013} it\u{2019}s")
        );
    }

    #[test]
    fn a_utf8_bom_overrides_a_wrong_content_type_header() {
        let body =
            b"\xef\xbb\xbf<html><head><meta charset=windows-1252><title>Caf\xc3\xa9 \xe2\x80\x9cok\xe2\x80\x9d</title>";
        let html = decode_html(body, Some("text/html; charset=iso-8859-1"));
        assert!(!html.starts_with('\u{feff}'), "the BOM is not part of the text");
        assert_eq!(
            extract(&html, &page_url()).title.as_deref(),
            Some("Café \u{201c}ok\u{201d}")
        );
    }

    #[test]
    fn charset_is_chosen_in_spec_order() {
        let cases: &[(&[u8], Option<&str>, &str)] = &[
            // A UTF-16LE BOM.
            (b"\xff\xfe<\0b\0>\0", None, "<b>"),
            // The header beats a meta.
            (
                b"<meta charset=utf-8>\xe9",
                Some("text/html; charset=windows-1252"),
                "<meta charset=utf-8>é",
            ),
            // An unknown header charset falls through to the meta.
            (
                b"<meta charset=windows-1252>\xe9",
                Some("text/html; charset=nonsense"),
                "<meta charset=windows-1252>é",
            ),
            // http-equiv form, attributes in any order, unquoted.
            (
                b"<META content='text/html; charset=ISO-8859-1' HTTP-EQUIV=Content-Type>\xe9",
                None,
                "<META content='text/html; charset=ISO-8859-1' HTTP-EQUIV=Content-Type>é",
            ),
            // `content` without http-equiv does not count.
            (
                b"<meta content='text/html; charset=ISO-8859-1'>\xc3\xa9",
                None,
                "<meta content='text/html; charset=ISO-8859-1'>é",
            ),
            // A meta inside a comment does not count.
            (
                b"<!-- <meta charset=windows-1252> -->\xc3\xa9",
                None,
                "<!-- <meta charset=windows-1252> -->é",
            ),
            // Another tag's attribute value does not count.
            (
                b"<a title='<meta charset=windows-1252>'>\xc3\xa9",
                None,
                "<a title='<meta charset=windows-1252>'>é",
            ),
            // A meta declaring UTF-16 means UTF-8 (the bytes are evidently ASCII-compatible).
            (b"<meta charset=utf-16le>\xc3\xa9", None, "<meta charset=utf-16le>é"),
            // The "replacement" encoding is ignored rather than blanking the page.
            (
                b"<meta charset=iso-2022-kr>\xc3\xa9",
                None,
                "<meta charset=iso-2022-kr>é",
            ),
            // Nothing declared, and pure ASCII or valid UTF-8: UTF-8.
            (b"<p>plain", None, "<p>plain"),
            (
                b"caf\xc3\xa9 \xe2\x80\x9cok\xe2\x80\x9d",
                None,
                "café \u{201c}ok\u{201d}",
            ),
            // ...even cut inside its last character, as a body cut at the cap may be.
            (b"caf\xc3\xa9 \xe2\x80", None, "café \u{fffd}"),
            // Nothing declared and not UTF-8: detected.
            (
                b"<p>Caf\xe9 cr\xe8me, cr\xe8me br\xfbl\xe9e et th\xe9 \xe0 volont\xe9",
                None,
                "<p>Café crème, crème brûlée et thé à volonté",
            ),
            // Declared UTF-8: invalid bytes replaced, never re-guessed.
            (b"caf\xc3\xa9 \xff", Some("text/html; charset=utf-8"), "café \u{fffd}"),
        ];
        for (body, content_type, expected) in cases {
            assert_eq!(
                decode_html(body, *content_type),
                *expected,
                "body: {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_meta_charset_after_the_first_1024_bytes_is_ignored() {
        let mut body = vec![b' '; PRESCAN_BYTES];
        body.extend_from_slice(b"<meta charset=windows-1252>\xe9");
        assert!(decode_html(&body, None).ends_with('\u{fffd}'));
        let mut body = b"<meta charset=windows-1252>".to_vec();
        body.extend(std::iter::repeat_n(b' ', PRESCAN_BYTES));
        body.push(0xe9);
        assert!(decode_html(&body, None).ends_with('é'));
        // Valid UTF-8 after a late windows-1252 declaration stays UTF-8 (not "Ã©").
        let mut body = vec![b' '; PRESCAN_BYTES];
        body.extend_from_slice("<meta charset=windows-1252>é".as_bytes());
        assert!(decode_html(&body, None).ends_with("<meta charset=windows-1252>é"));
    }

    /// A Russian news page in windows-1251 and a Japanese one in Shift_JIS, the charset declared
    /// nowhere (not in the header, not in a `<meta>`).
    fn undeclared_pages() -> [(&'static Encoding, &'static str, &'static str); 2] {
        [
            (
                encoding_rs::WINDOWS_1251,
                "https://news.example.ru/2026/12/storm",
                "<html><head><title>Штормовое предупреждение: что нужно знать жителям побережья</title>\
                 <meta name=\"description\" content=\"Синоптики ожидают порывы ветра до 30 метров в секунду. \
                 Объясняем, как подготовиться и куда звонить.\"></head><body><p>Новости</p>",
            ),
            (
                encoding_rs::SHIFT_JIS,
                "https://news.example.jp/2026/12/storm",
                "<html><head><title>沿岸部に暴風警報、今夜から明日にかけて警戒を</title>\
                 <meta name=\"description\" content=\"気象庁によると、最大瞬間風速は三十メートルに達する見込みです。\
                 備えと連絡先をまとめました。\"></head><body><p>ニュース</p>",
            ),
        ]
    }

    #[test]
    fn undeclared_windows_1251_and_shift_jis_pages_are_detected() {
        for (encoding, url, page) in undeclared_pages() {
            let (body, _, unmappable) = encoding.encode(page);
            assert!(!unmappable, "{} encodes the whole page", encoding.name());
            let url = Url::parse(url).expect("valid URL");
            // With the page's top-level domain as a hint, as the refresh decodes, and without.
            for html in [decode_page(&body, Some("text/html"), &url), decode_html(&body, None)] {
                assert_eq!(html, page, "{}", encoding.name());
            }
            let meta = extract(&decode_page(&body, None, &url), &url);
            assert!(meta.title.is_some_and(|t| page.contains(&t)), "{}", encoding.name());
        }
    }

    #[test]
    fn a_declared_charset_wins_over_detection() {
        for (encoding, url, page) in undeclared_pages() {
            let (body, _, _) = encoding.encode(page);
            let url = Url::parse(url).expect("valid URL");
            // Declared windows-1252 in the header, or in a <meta>: decoded so, even though the
            // bytes look like something else.
            let expected = WINDOWS_1252.decode_without_bom_handling(&body).0;
            assert_eq!(
                decode_page(&body, Some("text/html; charset=windows-1252"), &url),
                expected,
                "{} declared in the header",
                encoding.name()
            );
            let declared = [b"<meta charset=windows-1252>".as_slice(), &body].concat();
            let expected = WINDOWS_1252.decode_without_bom_handling(&declared).0;
            assert_eq!(
                decode_page(&declared, None, &url),
                expected,
                "{} declared in a meta",
                encoding.name()
            );
            // And a declaration of the right charset decodes the page.
            let right = format!("text/html; charset={}", encoding.name());
            assert_eq!(decode_page(&body, Some(&right), &url), page);
        }
    }

    #[test]
    fn the_top_level_domain_hint_is_only_ever_a_plain_label() {
        let cases = [
            ("https://example.ru/", Some("ru")),
            ("https://EXAMPLE.JP./", None),
            ("https://xn--80ak6aa92e.xn--p1ai/", Some("xn--p1ai")),
            ("https://пример.рф/", Some("xn--p1ai")),
            ("http://192.0.2.1/", None),
            ("http://[2001:db8::1]/", None),
            ("file:///tmp/page.html", None),
        ];
        for (url, expected) in cases {
            let url = Url::parse(url).expect("valid URL");
            assert_eq!(top_level_domain(&url), expected, "{url}");
        }
    }

    #[test]
    fn charset_is_extracted_from_meta_content_like_the_spec() {
        let cases: &[(&[u8], Option<&'static Encoding>)] = &[
            (b"text/html; charset=windows-1252", Some(WINDOWS_1252)),
            (b"text/html;charset = \"koi8-r\"", Some(encoding_rs::KOI8_R)),
            (b"text/html; charset='shift_jis'; foo", Some(encoding_rs::SHIFT_JIS)),
            (b"text/html; charsetx; charset=utf-8", Some(UTF_8)),
            (b"text/html; charset=\"unterminated", None),
            (b"text/html; charset=", None),
            (b"text/html", None),
        ];
        for (content, expected) in cases {
            assert_eq!(
                charset_from_meta_content(content),
                *expected,
                "{:?}",
                String::from_utf8_lossy(content)
            );
        }
    }
}
