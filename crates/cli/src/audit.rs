//! Audit commands: tail, query, verify (live or offline), checkpoint.

use std::time::SystemTime;

use anyhow::Context;
use lanyard_proto::admin::{QueryAuditRequest, TailAuditRequest, VerifyAuditRequest};
use lanyard_server::audit::{self, AuditVerifyError};
use lanyard_store::SledStore;

use crate::cli::AuditCommand;
use crate::clients::{self, StatusExt};

/// Runs an audit command; `Ok(false)` means the log did not verify (the
/// reason is already printed).
pub(crate) async fn run(cmd: AuditCommand) -> anyhow::Result<bool> {
    match cmd {
        AuditCommand::Tail { lines, follow, admin } => {
            let mut client = clients::admin(&admin.admin_socket).await?;
            let mut stream =
                client.tail_audit(TailAuditRequest { last: lines, follow }).await.or_status("tail audit")?;
            while let Some(record) =
                stream.message().await.map_err(|s| anyhow::anyhow!("tail audit: {}", clients::status_line(&s)))?
            {
                println!("{}", record.json);
            }
            Ok(true)
        }
        AuditCommand::Query { task, user, connector, since, kind, limit, admin } => {
            let mut client = clients::admin(&admin.admin_socket).await?;
            let since = since.map(|d| lanyard_core::unix_secs(SystemTime::now() - d)).unwrap_or(0);
            let mut from_seq = 1;
            let mut printed = 0;
            loop {
                let req = QueryAuditRequest {
                    task: task.clone().unwrap_or_default(),
                    user: user.clone().unwrap_or_default(),
                    connector: connector.as_ref().map(ToString::to_string).unwrap_or_default(),
                    since: i64::try_from(since).unwrap_or(0),
                    kind: kind.clone().unwrap_or_default(),
                    limit: limit.saturating_sub(printed).min(1000),
                    from_seq,
                };
                let records = client.query_audit(req).await.or_status("query audit")?.records;
                let Some(last) = records.last() else { break };
                from_seq = last.seq + 1;
                for r in &records {
                    println!("{}", r.json);
                }
                printed += u32::try_from(records.len()).unwrap_or(u32::MAX);
                if printed >= limit {
                    break;
                }
            }
            Ok(true)
        }
        AuditCommand::Verify { data_dir: Some(dir), checkpoint, .. } => {
            verify_offline(&dir, checkpoint.as_deref()).await
        }
        AuditCommand::Verify { data_dir: None, checkpoint: Some(_), .. } => {
            anyhow::bail!("--checkpoint needs --data-dir (a copy of the store to check it against)")
        }
        AuditCommand::Verify { data_dir: None, checkpoint: None, admin } => {
            let mut client = clients::admin(&admin.admin_socket).await?;
            match client.verify_audit(VerifyAuditRequest {}).await {
                Ok(r) => {
                    let r = r.into_inner();
                    println!("audit log verifies: {} records, head {}", r.records, r.head);
                    Ok(true)
                }
                Err(s) if s.code() == tonic::Code::Aborted => {
                    eprintln!("lanyard: {}", s.message());
                    Ok(false)
                }
                Err(s) => Err(anyhow::anyhow!("verify audit: {}", clients::status_line(&s))),
            }
        }
        AuditCommand::Checkpoint { admin } => {
            let mut client = clients::admin(&admin.admin_socket).await?;
            let r = client.verify_audit(VerifyAuditRequest {}).await.or_status("verify audit")?;
            if r.checkpoint.is_empty() {
                anyhow::bail!("no checkpoint yet: the log has {} records", r.records);
            }
            println!("{}", r.checkpoint);
            Ok(true)
        }
    }
}

/// Verifies a store directory (a copy, or a stopped server's) without a server.
async fn verify_offline(dir: &std::path::Path, checkpoint: Option<&std::path::Path>) -> anyhow::Result<bool> {
    let store = SledStore::open(dir).with_context(|| format!("cannot open the store in {}", dir.display()))?;
    let keys = audit::store_checkpoint_keys(&store).await?;
    let result = match audit::verify_audit(&store, &keys).await {
        Ok(report) => match checkpoint {
            Some(path) => {
                let jws = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                audit::check_checkpoint(&store, &keys, jws.trim(), report.records).await.map(|_| report)
            }
            None => Ok(report),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(report) => {
            println!(
                "audit log verifies: {} records, head {}",
                report.records,
                lanyard_core::hex::encode(&report.head)
            );
            Ok(true)
        }
        Err(AuditVerifyError::Store(e)) => Err(e.into()),
        Err(e) => {
            eprintln!("lanyard: {e}");
            Ok(false)
        }
    }
}
