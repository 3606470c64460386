//! One HTTP/1.1 GET with a bearer token, over hyper.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// `GET <base>/search?q=<query>` with `Authorization: Bearer <token>`;
/// the status and the body as text.
pub(crate) async fn get_search(base: &::http::Uri, query: &str, token: &str) -> Result<(u16, String), String> {
    let authority = base.authority().ok_or("tool service URL has no host")?.clone();
    let host = authority.host().to_owned();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let query: String = query
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect();
    let request = ::http::Request::get(format!("/search?q={query}"))
        .header(::http::header::HOST, authority.as_str())
        .header(::http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
