//! Printing records for people and for scripts.

use lanyard_proto::admin::Agent;
use lanyard_proto::common::Entry;
use serde_json::{Value, json};

use crate::cli::Output;

pub(crate) fn entry_json(e: &Entry) -> Value {
    json!({
        "id": e.id,
        "spiffe_id": e.spiffe_id,
        "parent_id": e.parent_id,
        "selectors": e.selectors,
        "x509_ttl": e.x509_ttl_seconds,
        "jwt_ttl": e.jwt_ttl_seconds,
        "dns_names": e.dns_names,
        "expires_at": (e.expires_at != 0).then_some(e.expires_at),
        "hint": (!e.hint.is_empty()).then_some(&e.hint),
        "revision": e.revision,
        "tools": e.tools,
        "audiences": e.audiences,
        "max_classification": if e.max_classification.is_empty() { "public" } else { e.max_classification.as_str() },
        "delegate_to": e.delegate_to,
        "task_authority": e.task_authority,
    })
}

pub(crate) fn entry_text(e: &Entry) -> String {
    let mut out = format!(
        "Entry ID      : {}\nSPIFFE ID     : {}\nParent ID     : {}\nRevision      : {}\nX509-SVID TTL : {}\nJWT-SVID TTL  : {}\n",
        e.id,
        e.spiffe_id,
        e.parent_id,
        e.revision,
        lanyard_core::format_duration(std::time::Duration::from_secs(e.x509_ttl_seconds.into())),
        lanyard_core::format_duration(std::time::Duration::from_secs(e.jwt_ttl_seconds.into())),
    );
    for s in &e.selectors {
        out.push_str(&format!("Selector      : {s}\n"));
    }
    for d in &e.dns_names {
        out.push_str(&format!("DNS name      : {d}\n"));
    }
    if !e.hint.is_empty() {
        out.push_str(&format!("Hint          : {}\n", e.hint));
    }
    for t in &e.tools {
        out.push_str(&format!("Tool          : {t}\n"));
    }
    for a in &e.audiences {
        out.push_str(&format!("Audience      : {a}\n"));
    }
    if !e.tools.is_empty() || !e.max_classification.is_empty() {
        let c = if e.max_classification.is_empty() { "public" } else { e.max_classification.as_str() };
        out.push_str(&format!("Max class.    : {c}\n"));
    }
    for d in &e.delegate_to {
        out.push_str(&format!("Delegate to   : {d}\n"));
    }
    if e.task_authority {
        out.push_str("Task authority: yes\n");
    }
    out
}

pub(crate) fn print_entries(entries: &[Entry], output: Output) {
    match output {
        Output::Json => println!("{}", Value::Array(entries.iter().map(entry_json).collect())),
        Output::Text => {
            if entries.is_empty() {
                println!("no entries");
            }
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", entry_text(e));
            }
        }
    }
}

pub(crate) fn print_entry(e: &Entry, output: Output) {
    match output {
        Output::Json => println!("{}", entry_json(e)),
        Output::Text => print!("{}", entry_text(e)),
    }
}

pub(crate) fn agent_json(a: &Agent) -> Value {
    json!({
        "spiffe_id": a.spiffe_id,
        "name": a.name,
        "attested_at": a.attested_at,
        "svid_expires_at": a.svid_expires_at,
        "banned": a.banned,
        "last_seen": a.last_seen,
    })
}

pub(crate) fn print_agents(agents: &[Agent], output: Output) {
    match output {
        Output::Json => println!("{}", Value::Array(agents.iter().map(agent_json).collect())),
        Output::Text => {
            if agents.is_empty() {
                println!("no agents");
            }
            for a in agents {
                let state = if a.banned { "banned" } else { "active" };
                println!("{}  {state}  svid expires {}", a.spiffe_id, a.svid_expires_at);
            }
        }
    }
}
