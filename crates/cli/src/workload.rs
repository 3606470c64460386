//! Workload commands: what a process sees through the agent's socket.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use lanyard_ca::bundle::pem;
use lanyard_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest, X509svidRequest, X509svidResponse};
use serde_json::json;

use crate::cli::{JwtCommand, Output, SvidCommand};
use crate::clients::{self, StatusExt, workload_request};

pub(crate) async fn svid(cmd: SvidCommand) -> anyhow::Result<()> {
    let SvidCommand::Fetch { write, socket, output } = cmd;
    let response = fetch_x509(&socket.socket).await?;
    let first = response.svids.first().context("the agent answered with no SVIDs")?;
    if let Some(dir) = write {
        write_svid_files(&dir, first)?;
    }
    let described: Vec<_> = response.svids.iter().map(describe).collect::<anyhow::Result<_>>()?;
    match output.output {
        Output::Json => println!("{}", serde_json::Value::Array(described)),
        Output::Text => {
            for d in described {
                println!("SPIFFE ID : {}", d["spiffe_id"].as_str().unwrap_or_default());
                println!("Serial    : {}", d["serial"].as_str().unwrap_or_default());
                println!("Expires   : {}", d["not_after"]);
            }
        }
    }
    Ok(())
}

/// The first X509SVIDResponse from the agent's stream.
pub(crate) async fn fetch_x509(socket: &str) -> anyhow::Result<X509svidResponse> {
    let mut client = clients::workload(socket).await?;
    let mut stream = client.fetch_x509svid(workload_request(X509svidRequest {})).await.or_status("fetch X.509-SVID")?;
    match stream.message().await {
        Ok(Some(m)) => Ok(m),
        Ok(None) => bail!("fetch X.509-SVID: the agent closed the stream without an answer"),
        Err(s) => bail!("fetch X.509-SVID: {}", clients::status_line(&s)),
    }
}

fn describe(svid: &lanyard_proto::workload::X509svid) -> anyhow::Result<serde_json::Value> {
    let certs = split_der(&svid.x509_svid)?;
    let leaf = certs.first().context("empty certificate chain")?;
    let info = lanyard_ca::svid::inspect_leaf(leaf)?;
    Ok(json!({
        "spiffe_id": svid.spiffe_id,
        "serial": info.serial,
        "not_after": lanyard_core::unix_secs(info.not_after),
        "hint": svid.hint,
    }))
}

/// Splits concatenated DER certificates.
pub(crate) fn split_der(mut der: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let len = der_sequence_len(der)?;
        out.push(der[..len].to_vec());
        der = &der[len..];
    }
    Ok(out)
}

/// The encoded length (header included) of the DER SEQUENCE at the front of `der`.
fn der_sequence_len(der: &[u8]) -> anyhow::Result<usize> {
    match der {
        [0x30, short, ..] if short & 0x80 == 0 => within(der, 2 + usize::from(*short)),
        [0x30, long, rest @ ..] => {
            let n = usize::from(long & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                bail!("certificate chain has a bad DER length");
            }
            let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            within(der, 2 + n + len)
        }
        _ => bail!("certificate chain is not DER"),
    }
}

fn within(der: &[u8], len: usize) -> anyhow::Result<usize> {
    if len > der.len() {
        bail!("certificate chain is truncated");
    }
    Ok(len)
}

fn write_svid_files(dir: &Path, svid: &lanyard_proto::workload::X509svid) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let chain: String = split_der(&svid.x509_svid)?.iter().map(|c| pem("CERTIFICATE", c)).collect();
    let bundle: String = split_der(&svid.bundle)?.iter().map(|c| pem("CERTIFICATE", c)).collect();
    write_file(&dir.join("svid.pem"), chain.as_bytes(), 0o644)?;
    write_file(&dir.join("svid_key.pem"), pem("PRIVATE KEY", &svid.x509_svid_key).as_bytes(), 0o600)?;
    write_file(&dir.join("bundle.pem"), bundle.as_bytes(), 0o644)?;
    eprintln!("wrote svid.pem, svid_key.pem and bundle.pem to {}", dir.display());
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub(crate) async fn jwt(cmd: JwtCommand) -> anyhow::Result<()> {
    match cmd {
        JwtCommand::Fetch { audiences, spiffe_id, socket, output } => {
            let mut client = clients::workload(&socket.socket).await?;
            let request =
                JwtsvidRequest { audience: audiences, spiffe_id: spiffe_id.map(|s| s.to_string()).unwrap_or_default() };
            let reply = client.fetch_jwtsvid(workload_request(request)).await.or_status("fetch JWT-SVID")?;
            match output.output {
                Output::Json => {
                    let list: Vec<_> =
                        reply.svids.iter().map(|s| json!({ "spiffe_id": s.spiffe_id, "token": s.svid })).collect();
                    println!("{}", serde_json::Value::Array(list));
                }
                Output::Text => {
                    for s in &reply.svids {
                        println!("{}", s.svid);
                    }
                }
            }
        }
        JwtCommand::Validate { audience, token, socket } => {
            let mut client = clients::workload(&socket.socket).await?;
            let reply = client
                .validate_jwtsvid(workload_request(ValidateJwtsvidRequest { audience, svid: token }))
                .await
                .or_status("validate JWT-SVID")?;
            let claims = reply.claims.map(struct_json).unwrap_or(serde_json::Value::Null);
            println!("{}", json!({ "spiffe_id": reply.spiffe_id, "claims": claims }));
        }
    }
    Ok(())
}

fn struct_json(s: prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(s.fields.into_iter().map(|(k, v)| (k, value_json(v))).collect())
}

fn value_json(v: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => b.into(),
        Some(Kind::NumberValue(n)) => {
            // Whole numbers (exp, iat) print as integers.
            if n.fract() == 0.0 && n.abs() < 9.0e15 { json!(n as i64) } else { json!(n) }
        }
        Some(Kind::StringValue(s)) => s.into(),
        Some(Kind::ListValue(l)) => serde_json::Value::Array(l.values.into_iter().map(value_json).collect()),
        Some(Kind::StructValue(s)) => struct_json(s),
    }
}
