//! TLS for an `https://` OTLP endpoint: Mozilla's roots, plus the standard variables for a
//! private CA and a client certificate.
//!
//! The tonic exporter switches TLS on by itself for `https://`, but with no trusted roots at all,
//! so every handshake would fail with an unknown issuer. It also reads none of the specification's
//! certificate variables. Both are done here: the roots are compiled in (`webpki-roots`), so a
//! distroless image without a CA bundle still verifies a hosted collector, and
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` adds the CA of an in-house collector.

use std::path::PathBuf;

use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};

use super::TelemetryError;

/// PEM file of a CA to trust besides the built-in roots (traces-specific variable first).
const CERTIFICATE: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];
/// PEM files of a client certificate and its key, for collectors that require mutual TLS.
const CLIENT_CERTIFICATE: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
];
const CLIENT_KEY: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY"];

/// The TLS settings for `endpoint`: `None` for a plain `http://` endpoint.
///
/// # Errors
///
/// [`TelemetryError::Certificate`] if a certificate variable names a file that cannot be read, or
/// only one of the client certificate and key is given.
pub(super) fn config_for(
    endpoint: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<ClientTlsConfig>, TelemetryError> {
    let is_https = endpoint
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    if !is_https {
        return Ok(None);
    }
    let path = |vars: [&'static str; 2]| {
        vars.iter()
            .find_map(|var| lookup(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()))
            .map(|path| (vars[1], PathBuf::from(path)))
    };
    let mut config = ClientTlsConfig::new().with_webpki_roots();
    if let Some(ca) = path(CERTIFICATE) {
        config = config.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (path(CLIENT_CERTIFICATE), path(CLIENT_KEY)) {
        (Some(cert), Some(key)) => config = config.identity(Identity::from_pem(read(cert)?, read(key)?)),
        (None, None) => {}
        (Some((var, _)), None) | (None, Some((var, _))) => {
            return Err(TelemetryError::Certificate(format!(
                "{var} is set without its pair: mutual TLS needs both OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE \
                 and OTEL_EXPORTER_OTLP_CLIENT_KEY"
            )));
        }
    }
    Ok(Some(config))
}

fn read((var, path): (&str, PathBuf)) -> Result<Vec<u8>, TelemetryError> {
    std::fs::read(&path).map_err(|e| TelemetryError::Certificate(format!("{var}: cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        |k| pairs.iter().find(|(name, _)| *name == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn plain_endpoints_get_no_tls() {
        assert!(config_for("http://jaeger:4317", env(&[])).expect("ok").is_none());
        // Even with certificate variables set: they only matter for https.
        let set = env(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")]);
        assert!(config_for("http://jaeger:4317", set).expect("ok").is_none());
    }

    #[test]
    fn https_endpoints_get_tls_in_any_letter_case() {
        assert!(
            config_for("https://collector.example:4317", env(&[]))
                .expect("ok")
                .is_some()
        );
        assert!(config_for("HTTPS://collector.example", env(&[])).expect("ok").is_some());
    }

    #[test]
    fn an_unreadable_ca_file_is_an_error_naming_the_variable_and_the_file() {
        let set = env(&[("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")]);
        let error = config_for("https://collector.example", set).expect_err("unreadable");
        let text = error.to_string();
        assert!(text.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"), "{text}");
        assert!(text.contains("/nonexistent/ca.pem"), "{text}");
    }

    #[test]
    fn a_client_certificate_without_its_key_is_an_error() {
        let set = env(&[("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/tmp/client.pem")]);
        let error = config_for("https://collector.example", set).expect_err("half a pair");
        assert!(error.to_string().contains("without its pair"), "{error}");
    }
}
