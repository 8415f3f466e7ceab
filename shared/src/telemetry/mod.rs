//! Telemetry: JSON logs on stderr carrying `trace_id`/`span_id`, and OpenTelemetry traces
//! exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! # Why it is built this way
//!
//! - **Traces always exist, export is optional.** The `tracing-opentelemetry` layer is installed
//!   whether or not an endpoint is configured, so every log line carries a trace id, the queue
//!   carries trace context from the producer to the worker, and `links.last_trace_id` is filled:
//!   an operator can follow one job through both processes' logs even without Jaeger. Without an
//!   endpoint the provider has no exporter: nothing is sent anywhere, no connection is attempted,
//!   and what only an exporter would read (busy/idle times, code location and thread attributes,
//!   the `queue.wait` span) is not computed: it is work on every span and every poll of a job.
//! - **gRPC (tonic), on a runtime of its own.** The SDK's batch processor exports from a plain OS
//!   thread; the async-reqwest HTTP exporter panics there, and a tonic channel needs a Tokio
//!   runtime when it is built (its connection worker is spawned then). We build the exporter
//!   inside a small current-thread runtime on a dedicated thread, so export works the same from a
//!   multi-thread `main`, a current-thread test, or after the application's runtime has stopped,
//!   and the final flush at exit can block without starving the tasks it needs.
//! - **`TraceContextPropagator` is the global propagator** in every process that calls
//!   [`init_telemetry`]: trace context crosses the queue as W3C `traceparent`/`tracestate` and is
//!   read back through the same global, so producer and worker must agree.
//! - **The guard flushes.** Spans sit in the batch processor's queue for up to
//!   `OTEL_BSP_SCHEDULE_DELAY` (5 s by default); [`TelemetryGuard`] shuts the provider down when
//!   dropped — at the end of `main_entry`, which the binaries reach on SIGTERM too, after the
//!   drain — so the last spans (the ones that explain why a process stopped) are not lost.
//! - **Spans are filtered apart from logs.** `RUST_LOG` decides what is *logged*; the trace layer
//!   keeps `info` and above of everything except the exporter's own transport crates (tracing
//!   those would feed export traffic back into export). So `RUST_LOG=warn` quiets the logs
//!   without emptying Jaeger.
//!
//! - **Span fields are formatted cheaply.** A log line shows the fields of the span it was logged
//!   in; `span_fields::SpanFieldsJson` keeps them as JSON without tracing-subscriber's
//!   parse-and-reserialise on every `Span::record`, which cost about a tenth of a busy worker's
//!   CPU.
//!
//! Attributes never carry secrets: URLs appear as hosts only, and [`redact`] strips query strings
//! and credentials from any URL inside an error message before it becomes a span status.

mod span_fields;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber, span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{self, Filter, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log filter when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// Sampler when `OTEL_TRACES_SAMPLER` is unset: the SDK's own default (a root span is always
/// sampled, a child follows its parent's decision).
pub const DEFAULT_SAMPLER: &str = "parentbased_always_on";

/// What the trace layer records: `info` and above, minus the exporter's transport (its spans and
/// events would describe the export itself, feeding every batch into the next one) and the
/// OpenTelemetry crates' own diagnostics (they go to the logs only).
const TRACE_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,opentelemetry=off,\
    opentelemetry_sdk=off,opentelemetry_otlp=off,opentelemetry_proto=off";

/// How long the final flush may take at exit. Kubernetes' `terminationGracePeriodSeconds` should
/// leave this much after `LINKPULSE_SHUTDOWN_GRACE`.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Instrumentation scope of our spans.
const TRACER_NAME: &str = "linkpulse";

/// Whether finished spans go anywhere: false once [`init_telemetry`] found no exporter to build.
/// True until then, so a process (or test) that installs its own tracer provider still gets every
/// span. Spans built only to be exported ([`record_queue_wait`]) are skipped when it is false.
static EXPORTING: AtomicBool = AtomicBool::new(true);

/// How log lines are written: `LINKPULSE_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, colored on a terminal.
    Text,
    /// One JSON object per line, with `trace_id` and `span_id`: what log collectors parse.
    Json,
}

/// The variable that chooses the [`LogFormat`].
pub const LOG_FORMAT_VAR: &str = "LINKPULSE_LOG_FORMAT";

impl LogFormat {
    /// `auto` (the default, also when unset or empty): text when stderr is a terminal — a person
    /// is reading — and JSON otherwise (a container's log collector, a pipe, a file). `text` and
    /// `json` force one (case-insensitive).
    ///
    /// # Errors
    ///
    /// Any other value, with the accepted ones.
    pub fn from_setting(value: Option<&str>, stderr_is_terminal: bool) -> Result<Self, String> {
        let auto = if stderr_is_terminal { Self::Text } else { Self::Json };
        match value.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
            None | Some("" | "auto") => Ok(auto),
            Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(format!(
                "{LOG_FORMAT_VAR}={other:?} is not one of auto, text, json; using {}",
                if auto == Self::Text {
                    "text (auto)"
                } else {
                    "json (auto)"
                }
            )),
        }
    }
}

/// Plain, human-readable logs to stderr and no tracing: for tools (the benchmark, the test worker)
/// that have no trace to tell. Calling it twice, or after [`init_telemetry`], does nothing.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Installs the global subscriber (logs on stderr in the [`LogFormat`] of `LINKPULSE_LOG_FORMAT`,
/// JSON unless stderr is a terminal, filtered by `RUST_LOG`, plus the
/// OpenTelemetry layer), the W3C propagator and the tracer provider; starts OTLP export when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and neither
/// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says otherwise.
///
/// `service_name` is used unless `OTEL_SERVICE_NAME` is set; sampling follows
/// `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` (default: parent-based, always on) and
/// batching the `OTEL_BSP_*` variables, all read by the SDK.
///
/// An `https://` endpoint is verified against Mozilla's roots and the CA in
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`, and presents the client certificate of
/// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`/`_CLIENT_KEY` when both are set (see `tls.rs`).
///
/// Never fails: an exporter that cannot be built (an invalid endpoint, an unreadable certificate
/// file) is reported as a warning and the process runs without export. Keep the returned guard
/// alive until exit: dropping it flushes the last spans.
pub fn init_telemetry(service_name: &str) -> TelemetryGuard {
    init_telemetry_with(service_name, |k| std::env::var(k).ok())
}

/// [`init_telemetry`], reading every variable through `lookup` instead of the process
/// environment: the binaries pass their parsed command line (`--rust-log`, `--otel-…` flags,
/// else the environment, else the defaults), so a flag shown in `--help` is honoured. The
/// sampler is built here from `OTEL_TRACES_SAMPLER`/`_ARG` for the same reason (the SDK would
/// read only the environment), with the SDK's names and fallbacks.
pub fn init_telemetry_with(service_name: &str, lookup: impl Fn(&str) -> Option<String>) -> TelemetryGuard {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let endpoint = export_endpoint(&lookup);
    let (sampler, sampler_problem) = sampler(&lookup);

    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource(service_name, &lookup))
        .with_sampler(sampler);
    let mut export = None;
    let mut export_problem = None;
    if endpoint.is_some() {
        let started = endpoint
            .as_deref()
            .map_or(Ok(None), |endpoint| tls::config_for(endpoint, &lookup))
            .and_then(|tls| ExportRuntime::start(endpoint.clone().unwrap_or_default(), tls));
        match started {
            Ok((exporter, runtime)) => {
                builder = builder.with_batch_exporter(exporter);
                export = Some(runtime);
            }
            Err(problem) => export_problem = Some(problem),
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer(TRACER_NAME);
    global::set_tracer_provider(provider.clone());

    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (format, format_problem) = match LogFormat::from_setting(lookup(LOG_FORMAT_VAR).as_deref(), terminal) {
        Ok(format) => (format, None),
        Err(problem) => (
            LogFormat::from_setting(None, terminal).unwrap_or(LogFormat::Json),
            Some(problem),
        ),
    };
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .fmt_fields(span_fields::SpanFieldsJson)
            .event_format(JsonWithTraceIds::default())
            .with_filter(AskEveryTime(filter_of(lookup("RUST_LOG"))))
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(terminal)
            .with_filter(AskEveryTime(filter_of(lookup("RUST_LOG"))))
            .boxed(),
    };
    let exporting = export.is_some();
    EXPORTING.store(exporting, Ordering::Relaxed);
    // Without an exporter a span's attributes go nowhere, yet the layer computes some for every
    // span and every poll (busy/idle times, source location, thread): per check that was a
    // measurable share of a worker's CPU. Trace and span ids, the context crossing the queue and
    // the ids in the logs do not depend on them.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(exporting)
        .with_location(exporting)
        .with_threads(exporting)
        .with_filter(AskEveryTime(EnvFilter::new(TRACE_FILTER)));
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();

    match (&endpoint, &export_problem) {
        (Some(endpoint), None) => {
            tracing::info!(endpoint = %redact(endpoint), "exporting traces over OTLP/gRPC")
        }
        (Some(endpoint), Some(problem)) => {
            tracing::warn!(endpoint = %redact(endpoint), %problem, "trace export disabled")
        }
        (None, _) => tracing::debug!("OTEL_EXPORTER_OTLP_ENDPOINT is unset; traces are not exported"),
    }
    if !installed {
        tracing::debug!("a global subscriber was already installed; kept it");
    }
    if let Some(problem) = format_problem {
        tracing::warn!("{problem}");
    }
    if let Some(problem) = sampler_problem {
        tracing::warn!("{problem}");
    }
    TelemetryGuard {
        provider: Some(provider),
        export,
    }
}

/// Flushes and shuts down trace export when dropped (or [`TelemetryGuard::shutdown`]).
#[derive(Debug)]
#[must_use = "dropping the guard shuts trace export down; hold it until the process exits"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    export: Option<ExportRuntime>,
}

impl TelemetryGuard {
    /// Whether spans are being exported (an endpoint is set and the exporter was built).
    pub fn is_exporting(&self) -> bool {
        self.export.is_some()
    }

    /// Exports the spans still queued (waiting at most [`SHUTDOWN_TIMEOUT`]) and stops export.
    /// Spans ended after this are dropped. Blocks the calling thread.
    pub fn shutdown(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
            && self.export.is_some()
        {
            tracing::warn!(%error, "the last spans may not have been exported");
        }
        if let Some(export) = self.export.take() {
            export.stop();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The thread and runtime that host the tonic channel of the exporter.
#[derive(Debug)]
struct ExportRuntime {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Why the exporter could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The runtime or thread hosting the exporter could not be created.
    #[error("cannot start the export runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OTLP exporter rejected its configuration.
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// A certificate file for an `https` endpoint cannot be read.
    #[error("TLS for the OTLP endpoint: {var}: cannot read {}: {source}", path.display())]
    CertificateFile {
        /// The variable that named the file.
        var: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A certificate file holds no PEM certificate (DER, or empty).
    #[error("TLS for the OTLP endpoint: {var}: {} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The variable that named the file.
        var: &'static str,
        /// The file.
        path: std::path::PathBuf,
    },
    /// Only one of the client certificate and key is set.
    #[error(
        "TLS for the OTLP endpoint: {var} is set without its pair; mutual TLS needs both \
         OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY"
    )]
    UnpairedClientIdentity {
        /// The variable that is set.
        var: &'static str,
    },
}

impl ExportRuntime {
    /// Starts the thread, which builds the runtime and, inside it, the exporter. Both are created
    /// on that thread so that a failure drops the runtime there: dropping a runtime on a thread
    /// that is itself running async code panics.
    /// `endpoint` is given explicitly: the exporter would otherwise read only the process
    /// environment, and miss an endpoint set by flag.
    fn start(
        endpoint: String,
        tls: Option<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig>,
    ) -> Result<(opentelemetry_otlp::SpanExporter, Self), TelemetryError> {
        let (built, exporter) = std::sync::mpsc::sync_channel(1);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = built.send(Err(TelemetryError::Runtime(error)));
                        return;
                    }
                };
                // The channel's connection worker is spawned here, onto `runtime`.
                let result = {
                    let _entered = runtime.enter();
                    use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
                    let builder = opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(endpoint);
                    match tls {
                        Some(tls) => builder.with_tls_config(tls).build(),
                        None => builder.build(),
                    }
                };
                let ok = result.is_ok();
                let _ = built.send(result.map_err(TelemetryError::Exporter));
                if ok {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                }
            })
            .map_err(TelemetryError::Runtime)?;
        let exporter = exporter
            .recv()
            .map_err(|_| TelemetryError::Runtime(std::io::Error::other("the export thread exited")))??;
        Ok((
            exporter,
            Self {
                stop: Some(stop),
                thread: Some(thread),
            },
        ))
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The endpoint export goes to, or `None` when export is off. Same precedence as the exporter
/// itself (the traces-specific variable first); empty values count as unset.
fn export_endpoint(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    let get = |var: &str| lookup(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || get("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return None;
    }
    get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// `service.name` (from `OTEL_SERVICE_NAME` when set, else `service_name`), `service.version`
/// and `service.instance.id` (host and pid: tells the replicas of a worker apart in Jaeger), plus
/// whatever `OTEL_RESOURCE_ATTRIBUTES` adds.
fn resource(service_name: &str, lookup: impl Fn(&str) -> Option<String>) -> Resource {
    let named = lookup("OTEL_SERVICE_NAME")
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let builder = Resource::builder().with_service_name(named.unwrap_or_else(|| service_name.to_owned()));
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(KeyValue::new(
            "service.instance.id",
            format!("{host}-{}", std::process::id()),
        ))
        .build()
}

/// A per-layer filter that never lets a callsite cache `Interest::always`.
///
/// Per-layer filters hand their decision from `enabled()` to `on_new_span`/`on_event` through
/// a thread-local; a callsite whose interest is cached as `always` skips `enabled()` and inherits
/// whatever the last `enabled()` call on that thread left there. sqlx (through `log_enabled!`
/// and its dynamic query logger) calls `enabled()` after every query, so the next `job.run` or
/// `http.fetch` span silently vanished from both the logs and the trace (tokio-rs/tracing#2519,
/// fix proposed upstream in #3572 — this is the same fix, applied from outside). Asking every
/// time costs one filter evaluation per span or event.
struct AskEveryTime<F>(F);

impl<S, F: Filter<S>> Filter<S> for AskEveryTime<F> {
    fn enabled(&self, meta: &Metadata<'_>, cx: &layer::Context<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let interest = self.0.callsite_enabled(meta);
        if interest.is_always() {
            Interest::sometimes()
        } else {
            interest
        }
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &layer::Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: layer::Context<'_, S>) {
        self.0.on_new_span(attrs, id, cx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: layer::Context<'_, S>) {
        self.0.on_record(id, values, cx);
    }

    fn on_enter(&self, id: &span::Id, cx: layer::Context<'_, S>) {
        self.0.on_enter(id, cx);
    }

    fn on_exit(&self, id: &span::Id, cx: layer::Context<'_, S>) {
        self.0.on_exit(id, cx);
    }

    fn on_close(&self, id: span::Id, cx: layer::Context<'_, S>) {
        self.0.on_close(id, cx);
    }
}

fn log_filter() -> EnvFilter {
    filter_of(std::env::var("RUST_LOG").ok())
}

/// The log filter `value` describes (`RUST_LOG` syntax), or [`DEFAULT_LOG_FILTER`] when it is
/// unset or invalid, as `EnvFilter::try_from_default_env` would have it.
fn filter_of(value: Option<String>) -> EnvFilter {
    value
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_FILTER))
}

/// The sampler `OTEL_TRACES_SAMPLER` names, with `OTEL_TRACES_SAMPLER_ARG` as the ratio, as the
/// SDK would build it from the environment: unknown names fall back to [`DEFAULT_SAMPLER`], a
/// missing or invalid ratio to 1.0; either comes back with a warning to log.
fn sampler(lookup: impl Fn(&str) -> Option<String>) -> (Sampler, Option<String>) {
    let get = |var: &str| lookup(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let name = get("OTEL_TRACES_SAMPLER").unwrap_or_else(|| DEFAULT_SAMPLER.to_owned());
    let arg = get("OTEL_TRACES_SAMPLER_ARG");
    let ratio = || match arg.as_deref().map(str::parse::<f64>) {
        Some(Ok(ratio)) => (ratio, None),
        _ => (
            1.0,
            Some(format!(
                "OTEL_TRACES_SAMPLER={name} needs OTEL_TRACES_SAMPLER_ARG, a ratio from 0.0 to 1.0 (got {arg:?}); using 1.0"
            )),
        ),
    };
    let parent = |inner: Sampler| Sampler::ParentBased(Box::new(inner));
    match name.as_str() {
        "always_on" => (Sampler::AlwaysOn, None),
        "always_off" => (Sampler::AlwaysOff, None),
        "traceidratio" => {
            let (r, problem) = ratio();
            (Sampler::TraceIdRatioBased(r), problem)
        }
        "parentbased_always_on" => (parent(Sampler::AlwaysOn), None),
        "parentbased_always_off" => (parent(Sampler::AlwaysOff), None),
        "parentbased_traceidratio" => {
            let (r, problem) = ratio();
            (parent(Sampler::TraceIdRatioBased(r)), problem)
        }
        other => (
            parent(Sampler::AlwaysOn),
            Some(format!(
                "OTEL_TRACES_SAMPLER={other:?} is not one of always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off, parentbased_traceidratio; using {DEFAULT_SAMPLER}"
            )),
        ),
    }
}

/// tracing-subscriber's JSON lines plus `trace_id` and `span_id` of the span the event happened
/// in, so a log search by trace id finds every line of one job in every process.
struct JsonWithTraceIds {
    inner: Format<Json>,
}

impl Default for JsonWithTraceIds {
    fn default() -> Self {
        Self {
            inner: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        // The OpenTelemetry layer attaches a span's context while it is entered.
        let cx = Context::current();
        let span = cx.span();
        let ids = span.span_context();
        if ids.is_valid() {
            line = with_ids(line, &ids.trace_id().to_string(), &ids.span_id().to_string());
        }
        writer.write_str(&line)
    }
}

/// Adds the ids as the last members of a JSON object line (ids are hex: nothing to escape).
fn with_ids(mut line: String, trace_id: &str, span_id: &str) -> String {
    if let Some(end) = line.rfind('}') {
        line.insert_str(end, &format!(r#","trace_id":"{trace_id}","span_id":"{span_id}""#));
    }
    line
}

/// The W3C trace context (`{"traceparent": …, "tracestate": …}`) of the current span, to store
/// with an enqueued job; `None` outside any traced span.
pub fn current_trace_context() -> Option<serde_json::Value> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&cx, &mut carrier));
    if carrier.is_empty() {
        return None;
    }
    Some(serde_json::Value::Object(
        carrier
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    ))
}

/// Makes `span` a child of the stored trace context `context` (as written by
/// [`current_trace_context`]). Call it before the span is first entered. Returns whether a valid
/// remote parent was set; a missing or malformed context leaves `span` a root.
pub fn set_parent(span: &tracing::Span, context: &serde_json::Value) -> bool {
    let Some(cx) = extract(context) else {
        return false;
    };
    span.set_parent(cx).is_ok()
}

fn extract(context: &serde_json::Value) -> Option<Context> {
    let carrier: HashMap<String, String> = context
        .as_object()?
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.to_ascii_lowercase(), v.to_owned())))
        .collect();
    let cx = global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The trace id (32 hex digits) of the current span, to store with a job's outcome.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let ids = span.span_context();
    ids.is_valid().then(|| ids.trace_id().to_string())
}

/// Marks `span` failed with `reason` (URLs inside it redacted by [`redact`]).
pub fn set_error(span: &tracing::Span, reason: &str) {
    span.set_status(Status::error(redact(reason)));
}

/// Records the time a job waited in the queue as a `queue.wait` span from `due` (when it became
/// runnable) to `started`, a sibling of the attempt under the enqueuer's span `parent`: Jaeger
/// then draws the wait instead of leaving a gap. Clocks of the database and the worker may
/// differ; a wait that would be negative is drawn as zero.
pub fn record_queue_wait(
    parent: &serde_json::Value,
    due: SystemTime,
    started: SystemTime,
    attributes: Vec<(&'static str, i64)>,
) {
    // Nothing but an exporter ever reads this span (no log line is written in it).
    if !EXPORTING.load(Ordering::Relaxed) {
        return;
    }
    let Some(cx) = extract(parent) else {
        return;
    };
    let tracer = global::tracer(TRACER_NAME);
    let mut span = tracer
        .span_builder("queue.wait")
        .with_kind(SpanKind::Internal)
        .with_start_time(due.min(started))
        .with_attributes(attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)))
        .start_with_context(&tracer, &cx);
    span.end_with_timestamp(started);
}

/// `{base}/trace/{trace_id}`: where Jaeger's UI (`LINKPULSE_JAEGER_URL`) shows a trace. `None`
/// for a malformed trace id.
pub fn jaeger_trace_url(base: &url::Url, trace_id: &str) -> Option<url::Url> {
    if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join(&format!("trace/{trace_id}")).ok()
}

/// `text` with every URL in it reduced to scheme, host, port and path: query strings, fragments
/// and `user:password@` can hold tokens, and span attributes and statuses are stored in the
/// tracing backend for everyone with access to read.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '(' | ')' | ',' | '`'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn redact_url(candidate: &str) -> String {
    let (scheme, after) = candidate.split_once("://").unwrap_or(("", candidate));
    let without_query = after.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match without_query.find('/') {
        Some(slash) => without_query.split_at(slash),
        None => (without_query, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let mut redacted = format!("{scheme}://{host}{path}");
    if after.len() > without_query.len() {
        redacted.push_str("?…");
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(name, _)| *name == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn log_format_is_text_on_a_terminal_json_elsewhere_unless_forced() {
        assert_eq!(LogFormat::from_setting(None, true), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_setting(None, false), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_setting(Some(" Auto "), true), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_setting(Some(""), false), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_setting(Some("JSON"), true), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_setting(Some("text"), false), Ok(LogFormat::Text));
        let problem = LogFormat::from_setting(Some("yaml"), false).expect_err("not a format");
        assert!(
            problem.contains("LINKPULSE_LOG_FORMAT") && problem.contains("auto, text, json"),
            "{problem}"
        );
    }

    #[test]
    fn export_is_off_without_an_endpoint() {
        assert_eq!(export_endpoint(env(&[])), None);
        assert_eq!(export_endpoint(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")])), None);
        assert_eq!(
            export_endpoint(env(&[("OTEL_SERVICE_NAME", "linkpulse-worker")])),
            None,
            "a service name alone exports nothing"
        );
    }

    #[test]
    fn export_follows_the_standard_endpoint_variables() {
        assert_eq!(
            export_endpoint(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317")])).as_deref(),
            Some("http://jaeger:4317")
        );
        assert_eq!(
            export_endpoint(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4317"),
            ]))
            .as_deref(),
            Some("http://b:4317"),
            "the signal-specific variable wins, as in the exporter"
        );
        assert_eq!(
            export_endpoint(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
                ("OTEL_SDK_DISABLED", "true"),
            ])),
            None
        );
        assert_eq!(
            export_endpoint(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ])),
            None
        );
    }

    #[test]
    fn redaction_keeps_hosts_and_paths_but_drops_queries_and_credentials() {
        assert_eq!(
            redact("error sending request for url (https://example.com/a/b?token=s3cret#frag)"),
            "error sending request for url (https://example.com/a/b?…)"
        );
        assert_eq!(
            redact("cannot connect to postgres://app:hunter2@db:5432/links: refused"),
            "cannot connect to postgres://db:5432/links: refused"
        );
        assert_eq!(redact("HTTP 404 Not Found"), "HTTP 404 Not Found");
        assert_eq!(
            redact("redirect loop at http://a.test/x?sid=1, then http://b.test"),
            "redirect loop at http://a.test/x?…, then http://b.test"
        );
    }

    #[test]
    fn ids_are_appended_to_the_json_object() {
        let line = with_ids("{\"level\":\"INFO\"}\n".to_owned(), "ab", "cd");
        assert_eq!(line, "{\"level\":\"INFO\",\"trace_id\":\"ab\",\"span_id\":\"cd\"}\n");
        let value: serde_json::Value = serde_json::from_str(line.trim()).expect("valid JSON");
        assert_eq!(value["trace_id"], "ab");
    }

    #[test]
    fn jaeger_links_point_at_the_trace_page() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let base: url::Url = "http://localhost:16686".parse().expect("url");
        assert_eq!(
            jaeger_trace_url(&base, id).map(String::from).as_deref(),
            Some("http://localhost:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let behind_proxy: url::Url = "https://ops.example/jaeger".parse().expect("url");
        assert_eq!(
            jaeger_trace_url(&behind_proxy, id).map(String::from).as_deref(),
            Some("https://ops.example/jaeger/trace/4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(jaeger_trace_url(&base, "not-an-id"), None);
    }

    #[test]
    fn trace_context_round_trips_through_the_stored_json() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let stored = serde_json::json!({
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "",
        });
        let cx = extract(&stored).expect("valid context");
        let span = cx.span();
        assert_eq!(
            span.span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span.span_context().span_id().to_string(), "00f067aa0ba902b7");
        assert!(span.span_context().is_remote());
        assert!(extract(&serde_json::json!({"traceparent": "garbage"})).is_none());
        assert!(extract(&serde_json::json!(null)).is_none());
    }
}
