//! One HTTP/1.1 GET at a time to the bundle endpoint, over plain TCP or
//! rustls. HTTPS trusts only the CA certificates it is given — never the
//! system roots — since the bundle endpoint is what every other trust here
//! rests on.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::FetchError;

/// Where the bundle endpoint is: `http(s)://host[:port][/prefix]`.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    /// The path prefix, without a trailing `/` (often empty).
    prefix: String,
    tls: Option<TlsConnector>,
    url: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("url", &self.url).finish_non_exhaustive()
    }
}

/// An answer: status, `ETag`, body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) etag: Option<String>,
    pub(crate) body: Bytes,
}

impl Endpoint {
    /// The endpoint at `url`. A URL ending in `/bundle` names the bundle
    /// itself; the endpoint is then what comes before it. `https` needs
    /// `ca_certs` (DER), the only roots trusted.
    pub fn new(url: &str, ca_certs: &[Vec<u8>]) -> Result<Self, FetchError> {
        let bad = || FetchError::BadUrl(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        if uri.query().is_some() {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        if authority.as_str().contains('@') {
            return Err(bad());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(bad());
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path().trim_end_matches('/');
        let prefix = path.strip_suffix("/bundle").unwrap_or(path).to_owned();
        let tls = match https {
            false => None,
            true => Some(tls_connector(ca_certs)?),
        };
        let url = format!("{}://{}{}", if https { "https" } else { "http" }, authority, prefix);
        Ok(Self { host, port, prefix, tls, url })
    }

    /// The endpoint's base URL (no trailing `/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// GETs `path` (with its query), sending `If-None-Match` when an `etag`
    /// is given; the body may be at most `limit` bytes and the whole
    /// exchange must end within `timeout`.
    pub(crate) async fn get(
        &self,
        path: &str,
        etag: Option<&str>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Answer, FetchError> {
        tokio::time::timeout(timeout, self.exchange(path, etag, limit))
            .await
            .unwrap_or(Err(FetchError::Timeout(timeout.as_secs())))
    }

    async fn exchange(&self, path: &str, etag: Option<&str>, limit: usize) -> Result<Answer, FetchError> {
        let addr = format!("{}:{}", self.host, self.port);
        let connect = |reason: String| FetchError::Connect { addr: addr.clone(), reason };
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| connect(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| connect(e.to_string()))?;
        let host_header = match self.port {
            80 | 443 => self.host.clone(),
            port => format!("{}:{port}", self.host),
        };
        let mut request = Request::get(format!("{}{path}", self.prefix))
            .header(header::HOST, host_header)
            .header(header::USER_AGENT, concat!("lanyard-verify/", env!("CARGO_PKG_VERSION")));
        if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|e| FetchError::Http(e.to_string()))?;
        match &self.tls {
            None => send(tcp, request, limit).await,
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| connect(e.to_string()))?;
                let stream = tls.connect(name, tcp).await.map_err(|e| connect(format!("TLS: {e}")))?;
                send(stream, request, limit).await
            }
        }
    }
}

async fn send<S>(stream: S, request: Request<Empty<Bytes>>, limit: usize) -> Result<Answer, FetchError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let http = |e: hyper::Error| FetchError::Http(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
    let connection = tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(http);
    let answer = match response {
        Ok(response) => {
            let status = response.status();
            let etag = response.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
            match Limited::new(response.into_body(), limit).collect().await {
                Ok(body) => Ok(Answer { status, etag, body: body.to_bytes() }),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(FetchError::TooLarge(limit)),
                Err(e) => Err(FetchError::Http(e.to_string())),
            }
        }
        Err(e) => Err(e),
    };
    connection.abort();
    answer
}

fn tls_connector(ca_certs: &[Vec<u8>]) -> Result<TlsConnector, FetchError> {
    if ca_certs.is_empty() {
        return Err(FetchError::NoCa);
    }
    let mut roots = rustls::RootCertStore::empty();
    for der in ca_certs {
        roots.add(der.as_slice().into()).map_err(|e| FetchError::BadCa(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::BadCa(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_endpoint_or_its_bundle() {
        for (url, base) in [
            ("http://127.0.0.1:8443", "http://127.0.0.1:8443"),
            ("http://127.0.0.1:8443/", "http://127.0.0.1:8443"),
            ("http://127.0.0.1:8443/bundle", "http://127.0.0.1:8443"),
            ("http://issuer.example/lanyard/bundle", "http://issuer.example/lanyard"),
        ] {
            assert_eq!(Endpoint::new(url, &[]).unwrap().url(), base, "{url}");
        }
        let e = Endpoint::new("http://issuer.example", &[]).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("issuer.example", 80));
    }

    #[test]
    fn bad_urls_and_https_without_roots_are_refused() {
        for url in ["ftp://x", "issuer.example", "http://", "http://u:p@x/", "http://x/?a=1", ""] {
            assert!(matches!(Endpoint::new(url, &[]), Err(FetchError::BadUrl(_))), "{url}");
        }
        assert_eq!(Endpoint::new("https://issuer.example", &[]).unwrap_err(), FetchError::NoCa);
        assert!(matches!(Endpoint::new("https://issuer.example", &[vec![1, 2, 3]]), Err(FetchError::BadCa(_))));
    }
}
