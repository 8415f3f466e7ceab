//! An in-process OTLP/gRPC trace receiver: the collector the tracing tests point the real
//! producer and worker binaries at (`OTEL_EXPORTER_OTLP_ENDPOINT`). It keeps every span it is
//! sent, decoded into plain values, and counts export calls (so a test can assert there were
//! none).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tokio::sync::oneshot;

/// An attribute value, as far as the tests care.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    Other,
}

impl Attr {
    /// The value as text, whatever its type (for "no secret anywhere" checks).
    pub fn text(&self) -> String {
        match self {
            Self::Str(s) => s.clone(),
            Self::Int(i) => i.to_string(),
            Self::Bool(b) => b.to_string(),
            Self::Double(d) => d.to_string(),
            Self::Other => String::new(),
        }
    }
}

/// One span event.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub name: String,
    pub attributes: HashMap<String, Attr>,
}

/// One received span.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    pub name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, empty for a root span.
    pub parent_span_id: String,
    /// OTLP `SpanKind` (2 server, 3 client, 5 consumer …).
    pub kind: i32,
    pub attributes: HashMap<String, Attr>,
    pub events: Vec<ReceivedEvent>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl ReceivedSpan {
    /// A string attribute.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(Attr::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// An integer attribute.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(Attr::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// A boolean attribute.
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.attributes.get(key) {
            Some(Attr::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// True when the span's status is `Error`.
    pub fn is_error(&self) -> bool {
        self.status_code == 2
    }
}

#[derive(Debug, Default)]
struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    exports: AtomicUsize,
}

#[derive(Debug)]
struct Collector(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.exports.fetch_add(1, Ordering::SeqCst);
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = match resource.get("service.name") {
                Some(Attr::Str(name)) => name.clone(),
                _ => String::new(),
            };
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    let status = span.status.unwrap_or_default();
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind,
                        attributes: attributes(&span.attributes),
                        events: span
                            .events
                            .iter()
                            .map(|e| ReceivedEvent {
                                name: e.name.clone(),
                                attributes: attributes(&e.attributes),
                            })
                            .collect(),
                        status_code: status.code,
                        status_message: status.message,
                        start_unix_nano: span.start_time_unix_nano,
                        end_unix_nano: span.end_time_unix_nano,
                    });
                }
            }
        }
        self.0.spans.lock().expect("lock").extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, Attr> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
        .collect()
}

fn value(v: Option<&AnyValue>) -> Attr {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Attr::Str(s.clone()),
        Some(any_value::Value::IntValue(i)) => Attr::Int(*i),
        Some(any_value::Value::BoolValue(b)) => Attr::Bool(*b),
        Some(any_value::Value::DoubleValue(d)) => Attr::Double(*d),
        _ => Attr::Other,
    }
}

/// A running receiver on `127.0.0.1`; stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    /// Serves TLS (`https://` endpoint).
    tls: bool,
    store: Arc<Store>,
    _stop: oneshot::Sender<()>,
}

impl OtlpReceiver {
    /// Listens on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        Self::serve(listener)
    }

    /// Serves on `listener`.
    pub fn serve(listener: tokio::net::TcpListener) -> Self {
        Self::serve_with(listener, None)
    }

    /// Listens on a free port and serves TLS with `certificate` and `key` (PEM); with
    /// `client_ca`, only clients presenting a certificate that CA issued are served (mutual TLS).
    pub async fn start_tls(certificate: &str, key: &str, client_ca: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let identity = tonic::transport::Identity::from_pem(certificate, key);
        let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = client_ca {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        Self::serve_with(listener, Some(tls))
    }

    fn serve_with(listener: tokio::net::TcpListener, tls: Option<tonic::transport::ServerTlsConfig>) -> Self {
        let addr = listener.local_addr().expect("receiver addr");
        let store = Arc::new(Store::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(Collector(store.clone()));
        let is_tls = tls.is_some();
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).expect("TLS settings of the receiver");
        }
        tokio::spawn(async move {
            server
                .add_service(service)
                .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            addr,
            tls: is_tls,
            store,
            _stop: stop,
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` when serving TLS), for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans.lock().expect("lock").clone()
    }

    /// Spans named `name`.
    pub fn named(&self, name: &str) -> Vec<ReceivedSpan> {
        self.spans().into_iter().filter(|s| s.name == name).collect()
    }

    /// Export calls received (successful or not).
    pub fn exports(&self) -> usize {
        self.store.exports.load(Ordering::SeqCst)
    }
}
