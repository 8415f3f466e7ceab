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
/// `true` makes an endpoint without a scheme plain `http://` (the exporter's own rule).
const INSECURE: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"];

/// The TLS settings for `endpoint`: `None` for a plain `http://` endpoint.
///
/// An endpoint without a scheme (`collector:4317`) is TLS unless `OTEL_EXPORTER_OTLP_INSECURE`
/// is `true`, as the exporter decides it: it prefixes `https://` itself, and without these
/// settings it would trust no certificate at all.
///
/// # Errors
///
/// [`TelemetryError`] if a certificate variable names a file that cannot be read or holds no PEM
/// certificate, or only one of the client certificate and key is given.
pub(super) fn config_for(
    endpoint: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<ClientTlsConfig>, TelemetryError> {
    let first = |vars: [&'static str; 2]| {
        vars.into_iter()
            .find_map(|var| Some((var, lookup(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())?)))
    };
    let scheme = endpoint
        .split_once("://")
        .map(|(scheme, _)| scheme)
        .filter(|scheme| !scheme.contains(['/', '?', '#']));
    let is_https = match scheme {
        Some(scheme) => scheme.eq_ignore_ascii_case("https"),
        None => !first(INSECURE).is_some_and(|(_, value)| value.eq_ignore_ascii_case("true")),
    };
    if !is_https {
        return Ok(None);
    }
    let mut config = ClientTlsConfig::new().with_webpki_roots();
    if let Some(ca) = first(CERTIFICATE) {
        config = config.ca_certificate(Certificate::from_pem(read_pem(ca)?));
    }
    match (first(CLIENT_CERTIFICATE), first(CLIENT_KEY)) {
        (Some(cert), Some(key)) => config = config.identity(Identity::from_pem(read_pem(cert)?, read(key)?)),
        (None, None) => {}
        (Some((var, _)), None) | (None, Some((var, _))) => return Err(TelemetryError::UnpairedClientIdentity { var }),
    }
    Ok(Some(config))
}

/// The file a variable names.
fn read((var, path): (&'static str, String)) -> Result<Vec<u8>, TelemetryError> {
    std::fs::read(&path).map_err(|source| TelemetryError::CertificateFile {
        var,
        path: PathBuf::from(path),
        source,
    })
}

/// A file that must hold at least one PEM certificate: tonic would take a DER file or an empty
/// one without complaint, and every handshake would then fail while export looked configured.
fn read_pem(named: (&'static str, String)) -> Result<Vec<u8>, TelemetryError> {
    let (var, path) = (named.0, PathBuf::from(&named.1));
    let bytes = read(named)?;
    if !bytes.windows(CERTIFICATE_BEGIN.len()).any(|w| w == CERTIFICATE_BEGIN) {
        return Err(TelemetryError::NoCertificate { var, path });
    }
    Ok(bytes)
}

const CERTIFICATE_BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";

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

    #[test]
    fn an_endpoint_without_a_scheme_is_tls_unless_insecure() {
        assert!(config_for("collector.example:4317", env(&[])).expect("ok").is_some());
        let insecure = env(&[("OTEL_EXPORTER_OTLP_INSECURE", "TRUE")]);
        assert!(config_for("collector.example:4317", insecure).expect("ok").is_none());
        // The traces-specific variable wins.
        let secure = env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "false"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ]);
        assert!(config_for("collector.example:4317", secure).expect("ok").is_some());
        // `://` after a path is not a scheme.
        assert!(config_for("collector:4317/p://q", env(&[])).expect("ok").is_some());
    }

    #[test]
    fn a_file_without_a_pem_certificate_is_an_error() {
        let path = std::env::temp_dir().join(format!("linkpulse-tls-unit-{}.der", std::process::id()));
        std::fs::write(&path, [0x30_u8, 0x82, 0x01, 0x0a]).expect("write");
        let named = path.display().to_string();
        let lookup = |k: &str| (k == "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE").then(|| named.clone());
        let error = config_for("https://collector.example", lookup).expect_err("not PEM");
        let _ = std::fs::remove_file(&path);
        let text = error.to_string();
        assert!(
            text.contains("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"),
            "names the variable used: {text}"
        );
        assert!(text.contains("no PEM certificate"), "{text}");
    }
}
