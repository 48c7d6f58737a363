//! The proxy's connection to a model upstream: plain TCP for `http://`, TLS for `https://`
//! (rustls, roots from the system store; `SSL_CERT_FILE`/`SSL_CERT_DIR` replace it, so a test
//! or a company CA can be trusted).

use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream to the upstream, whichever the scheme.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The TLS client settings, built once per process (loading the roots reads files).
fn client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG.get_or_init(build_config).clone()
}

fn build_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "none found".into());
        return Err(format!("no trusted root certificates ({why})"));
    }
    // ring builds with a C compiler alone (aws-lc needs cmake); rustls deprecates it only for
    // lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to `host:port`, with TLS (the certificate checked against `host`) when `tls`.
pub async fn connect(host: &str, port: u16, tls: bool) -> Result<Box<dyn Io>, String> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if !tls {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host}: not a TLS server name: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(client_config()?);
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("{host}:{port}: TLS: {e}"))?;
    Ok(Box::new(stream))
}
