//! The evaluation of `lol_html` (Cloudflare's streaming HTML rewriter) as the scrape's tokenizer,
//! kept so that it can be repeated: the candidate does the skimmer's two jobs, and
//!
//! - `LINKPULSE_SCRAPE_TOKENIZER=lol_html cargo test -p linkpulse-shared --lib scrape` runs every
//!   scrape test (unit, hostile, property) with the candidate in the skimmer's place;
//! - `cargo test --release -p linkpulse-shared --lib scrape::lol_html_eval -- --ignored
//!   --nocapture` times both on the fixture, typical and adversarial pages in one run.
//!
//! The verdict and its numbers are in `skim`'s documentation.
//!
//! The candidate copies the same tags into the same flat document for scraper (lol_html hands out
//! attribute values and text as written, entities undecoded, like the skimmer) and finds the same
//! challenge markup. It runs with `strict` off: strict mode refuses pages where a text-switching
//! tag sits inside `<select>` or after `<frameset>`, and a scrape must read every page.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use lol_html::html_content::{Element, TextChunk};
use lol_html::{HandlerResult, HtmlRewriter, Settings, element, text};

use super::challenge::{is_challenge_id_list, is_challenge_script};

/// Namespace of HTML elements (anything else is SVG or MathML content).
const HTML_NAMESPACE: &str = "http://www.w3.org/1999/xhtml";

thread_local! {
    /// Whether this test thread scrapes with the candidate.
    static CANDIDATE: Cell<bool> = Cell::new(
        std::env::var("LINKPULSE_SCRAPE_TOKENIZER").is_ok_and(|name| name == "lol_html"),
    );
}

/// Whether the scrape on this thread uses lol_html instead of the skimmer.
pub(super) fn candidate_selected() -> bool {
    CANDIDATE.with(Cell::get)
}

/// Runs `f` with the candidate selected or not, on this thread.
fn with_candidate<T>(selected: bool, f: impl FnOnce() -> T) -> T {
    let before = CANDIDATE.with(|c| c.replace(selected));
    let out = f();
    CANDIDATE.with(|c| c.set(before));
    out
}

/// The skimmer's flat document, made by lol_html: the first HTML `<title>` and every `<meta
/// content>`, `<link rel href>` and `<base href>` with only those attributes.
pub(super) fn skim(html: &str) -> String {
    #[derive(Default)]
    struct State {
        out: String,
        title_seen: bool,
        in_title: bool,
        foreign_title: bool,
    }
    let state = RefCell::new(State::default());
    let settings = Settings::new()
        .with_strict(false)
        // lol_html reports an SVG `<title>` (an HTML integration point) in the HTML namespace, so
        // the selector's descendant combinator has to tell: this handler runs first.
        .append_element_content_handler(element!("svg title, math title", |_: &mut Element| {
            state.borrow_mut().foreign_title = true;
            Ok(())
        }))
        .append_element_content_handler(element!("title", |el: &mut Element| {
            let mut s = state.borrow_mut();
            let foreign = std::mem::take(&mut s.foreign_title) || el.namespace_uri() != HTML_NAMESPACE;
            if s.title_seen || foreign {
                // Another title (HTML or SVG) starts: the first one is over.
                if s.in_title {
                    s.in_title = false;
                    s.out.push_str("</title>");
                }
            } else {
                s.title_seen = true;
                s.in_title = true;
                s.out.push_str("<title>");
            }
            Ok(())
        }))
        .append_element_content_handler(text!("title", |chunk: &mut TextChunk| {
            let mut s = state.borrow_mut();
            if s.in_title {
                s.out.push_str(chunk.as_str());
                if chunk.last_in_text_node() {
                    s.in_title = false;
                    s.out.push_str("</title>");
                }
            }
            Ok(())
        }))
        .append_element_content_handler(element!(
            "meta[content], link[rel][href], base[href]",
            |el: &mut Element| {
                if el.namespace_uri() != HTML_NAMESPACE {
                    return Ok(());
                }
                let name = el.tag_name();
                let attrs: &[&str] = match name.as_str() {
                    "meta" => &["property", "name", "content"],
                    "link" => &["rel", "href"],
                    _ => &["href"],
                };
                let mut s = state.borrow_mut();
                if s.in_title {
                    s.in_title = false;
                    s.out.push_str("</title>");
                }
                s.out.push('<');
                s.out.push_str(&name);
                for attr in attrs {
                    if let Some(value) = el.get_attribute(attr) {
                        s.out.push(' ');
                        s.out.push_str(attr);
                        s.out.push_str("=\"");
                        // Undecoded, so escaping the quote keeps the value scraper will decode.
                        s.out.push_str(&value.replace('"', "&quot;"));
                        s.out.push('"');
                    }
                }
                s.out.push('>');
                Ok(())
            }
        ));
    run(html, settings);
    let mut state = state.into_inner();
    if state.in_title {
        state.out.push_str("</title>");
    }
    state.out
}

/// Whether any tag carries challenge markup (`id`/`class` names, a challenge script or form
/// action), as the skimmer's scan in [`is_challenge_page`](super::is_challenge_page) decides.
pub(super) fn any_challenge_markup(html: &str) -> bool {
    #[derive(Default)]
    struct State {
        found: bool,
        /// Text of the HTML `<script>` being read.
        script: Option<String>,
    }
    fn finish_script(s: &mut State) {
        if let Some(text) = s.script.take() {
            s.found |= is_challenge_script(&text);
        }
    }
    /// Stops the rewriter as soon as an answer is known.
    fn stop_if(found: bool) -> HandlerResult {
        if found {
            Err("challenge markup found".into())
        } else {
            Ok(())
        }
    }
    let state = RefCell::new(State::default());
    let settings = Settings::new()
        .with_strict(false)
        .append_element_content_handler(element!("[id], [class], script, form[action]", |el: &mut Element| {
            let mut s = state.borrow_mut();
            finish_script(&mut s);
            let named = ["id", "class"]
                .iter()
                .filter_map(|name| el.get_attribute(name))
                .any(|value| is_challenge_id_list(&value));
            let html = el.namespace_uri() == HTML_NAMESPACE;
            let name = el.tag_name();
            let scripted = html
                && match name.as_str() {
                    "script" => el.get_attribute("src").is_some_and(|src| is_challenge_script(&src)),
                    "form" => el
                        .get_attribute("action")
                        .is_some_and(|action| is_challenge_script(&action)),
                    _ => false,
                };
            if html && name == "script" {
                s.script = Some(String::new());
            }
            s.found |= named || scripted;
            stop_if(s.found)
        }))
        .append_element_content_handler(text!("script", |chunk: &mut TextChunk| {
            let mut s = state.borrow_mut();
            if let Some(script) = &mut s.script {
                script.push_str(chunk.as_str());
                if chunk.last_in_text_node() {
                    finish_script(&mut s);
                }
            }
            stop_if(s.found)
        }));
    let stopped = !run(html, settings);
    let mut state = state.into_inner();
    finish_script(&mut state);
    stopped || state.found
}

/// Feeds `html` through a rewriter built from `settings`, output discarded; false when a handler
/// stopped it (or lol_html gave up on the page).
fn run(html: &str, settings: Settings<'_, '_>) -> bool {
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    rewriter.write(html.as_bytes()).is_ok() && rewriter.end().is_ok()
}

/// Pages the scrape meets, by kind: the fixtures, a typical large head, and the adversarial pages
/// of the hostile tests.
fn timing_pages() -> Vec<(String, String)> {
    let mut pages = vec![
        (
            "fixture: article".to_owned(),
            include_str!("../../tests/fixtures/metadata/cloudflare_article.html").to_owned(),
        ),
        (
            "fixture: challenge".to_owned(),
            include_str!("../../tests/fixtures/metadata/cloudflare_just_a_moment.html").to_owned(),
        ),
        ("typical head (31 KB)".to_owned(), typical_head()),
    ];
    for (name, body) in super::hostile_tests::adversarial_pages() {
        pages.push((format!("adversarial: {name}"), super::decode_html(&body, None)));
    }
    pages
}

/// A head like a news or shop page's: charset and viewport, a dozen preloads and stylesheets, Open
/// Graph and Twitter cards, JSON-LD, an inline style and a few inline scripts (analytics, consent),
/// then the start of the body.
fn typical_head() -> String {
    let mut head = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Storm warning for the coast &amp; what it means for you | Example News</title>",
    );
    for i in 0..12 {
        head.push_str(&format!(
            "<link rel=\"preload\" href=\"/assets/font-{i}.woff2\" as=\"font\" crossorigin>\
             <link rel=\"stylesheet\" href=\"/assets/app.{i}.css?v=8f1d2c3b\">"
        ));
    }
    head.push_str(
        "<meta name=\"description\" content=\"Forecasters expect gusts of 120 km/h tonight; here is what to do.\">\
         <meta property=\"og:title\" content=\"Storm warning for the coast\">\
         <meta property=\"og:image\" content=\"https://cdn.example.com/img/storm.jpg?w=1200&amp;h=630\">\
         <meta property=\"og:site_name\" content=\"Example News\">\
         <meta name=\"twitter:card\" content=\"summary_large_image\">\
         <link rel=\"icon\" href=\"/favicon-32.png\" sizes=\"32x32\">\
         <link rel=\"apple-touch-icon\" href=\"/apple-touch-icon.png\">",
    );
    head.push_str("<script type=\"application/ld+json\">");
    head.push_str(
        &"{\"@type\":\"NewsArticle\",\"headline\":\"Storm <b>warning</b>\",\"author\":[{\"name\":\"A. Writer\"}]},"
            .repeat(100),
    );
    head.push_str("</script><style>");
    head.push_str(
        &".card{display:flex;gap:8px}.card>img{width:100%}a[href^=\"http\"]:after{content:\"\\2197\"}".repeat(200),
    );
    head.push_str("</style>");
    for i in 0..6 {
        head.push_str(&format!(
            "<script>window.dataLayer=window.dataLayer||[];function gtag(){{dataLayer.push(arguments)}}\
             gtag('js',new Date());gtag('config','G-{i}');if(a<b&&c>d){{document.write('<div id=\"x{i}\"></div>')}}</script>"
        ));
    }
    head.push_str("<noscript><img src=\"/pixel.gif\"></noscript></head><body class=\"article\"><header><nav>");
    head.push_str(&"<a href=\"/section\">Section</a>".repeat(50));
    head.push_str("</nav></header>");
    head
}

/// What one scrape does with a decoded page: judge it, then read its metadata.
fn scrape(html: &str) -> usize {
    let url = url::Url::parse("https://example.com/dir/page.html").expect("valid URL");
    let meta = super::extract(html, &url);
    usize::from(super::is_challenge_page(html)) + meta.title.map_or(0, |t| t.len())
}

/// Best of three rounds of `reps` runs of `work` on `html`, per run, with the candidate selected
/// or not.
fn time(html: &str, reps: u32, candidate: bool, work: fn(&str) -> usize) -> Duration {
    with_candidate(candidate, || {
        (0..3)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..reps {
                    std::hint::black_box(work(std::hint::black_box(html)));
                }
                started.elapsed() / reps
            })
            .min()
            .unwrap_or_default()
    })
}

/// The tokenizer's share of a scrape: the flat document of the page's head.
fn skim_only(html: &str) -> usize {
    super::skim::skim(super::head::head_prefix(html)).len()
}

#[test]
fn the_candidate_agrees_with_the_skimmer_on_the_timing_pages() {
    for (name, html) in timing_pages() {
        let url = url::Url::parse("https://example.com/dir/page.html").expect("valid URL");
        let skimmer = with_candidate(false, || (super::extract(&html, &url), super::is_challenge_page(&html)));
        let candidate = with_candidate(true, || (super::extract(&html, &url), super::is_challenge_page(&html)));
        assert_eq!(skimmer, candidate, "{name}");
    }
}

/// The timing harness: `cargo test --release -p linkpulse-shared --lib scrape::lol_html_eval --
/// --ignored --nocapture`. Per page: a whole scrape ([`is_challenge_page`](super::is_challenge_page)
/// and [`extract`](fn@super::extract), scraper's parse of the flat document included), then the
/// tokenizer's flat document alone.
#[test]
#[ignore = "timing harness, run by hand in a release build"]
fn time_the_skimmer_against_lol_html() {
    println!(
        "{:<36} {:>7} | {:>10} {:>10} {:>6} | {:>10} {:>10} {:>6}",
        "page", "bytes", "skimmer", "lol_html", "ratio", "skim only", "lol_html", "ratio"
    );
    let mut totals = [Duration::ZERO; 4];
    for (name, html) in timing_pages() {
        // About 50 MB of input per page and implementation, at least 5 runs.
        let reps = u32::try_from((50 << 20) / html.len().max(1))
            .unwrap_or(u32::MAX)
            .clamp(5, 20_000);
        let times = [
            time(&html, reps, false, scrape),
            time(&html, reps, true, scrape),
            time(&html, reps, false, skim_only),
            time(&html, reps, true, skim_only),
        ];
        for (total, t) in totals.iter_mut().zip(times) {
            *total += t;
        }
        print_row(&name, html.len(), times);
    }
    print_row("sum of per-page times", 0, totals);
}

fn print_row(name: &str, bytes: usize, [scrape, lol_scrape, skim, lol_skim]: [Duration; 4]) {
    let ratio = |lol: Duration, ours: Duration| lol.as_secs_f64() / ours.as_secs_f64();
    println!(
        "{name:<36} {bytes:>7} | {:>10.1?} {:>10.1?} {:>5.2}x | {:>10.1?} {:>10.1?} {:>5.2}x",
        scrape,
        lol_scrape,
        ratio(lol_scrape, scrape),
        skim,
        lol_skim,
        ratio(lol_skim, skim),
    );
}
