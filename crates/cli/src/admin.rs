//! Admin commands: entries, join tokens, agents, the bundle.

use anyhow::Context;
use lanyard_proto::admin::{
    BackupRequest, BanAgentRequest, CreateEntryRequest, CreateJoinTokenRequest, DeleteEntryRequest, GetBundleRequest,
    GetEntryRequest, ListAgentsRequest, ListEntriesRequest, ListKeysRequest, ListKeysResponse, RevokeKeyRequest,
    RotateKeysRequest, UpdateEntryRequest,
};
use lanyard_proto::common::Entry;

use lanyard_core::SpiffeId;
use lanyard_store::Store as _;

use crate::cli::{
    AdminSocket, BundleCommand, BundleFormat, CaCommand, EntryCommand, EntryFields, JoinTokenCommand, Output,
    OutputArg, StoreCommand,
};
use crate::clients::{self, StatusExt};
use crate::output;

pub(crate) async fn entry(cmd: EntryCommand) -> anyhow::Result<()> {
    match cmd {
        EntryCommand::Create(args) => {
            let mut entry = Entry {
                spiffe_id: args.spiffe_id.to_string(),
                parent_id: args.parent_id.to_string(),
                ..Entry::default()
            };
            apply_fields(&mut entry, args.fields, true);
            let mut client = clients::admin(&args.admin.admin_socket).await?;
            let created =
                client.create_entry(CreateEntryRequest { entry: Some(entry) }).await.or_status("create entry")?;
            output::print_entry(&created, args.output.output);
        }
        EntryCommand::List { parent_id, spiffe_id, admin, output } => {
            let mut client = clients::admin(&admin.admin_socket).await?;
            let mut entries = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_entries(ListEntriesRequest {
                        parent_id: parent_id.as_ref().map(ToString::to_string).unwrap_or_default(),
                        spiffe_id: spiffe_id.as_ref().map(ToString::to_string).unwrap_or_default(),
                        page_size: 1000,
                        page_token,
                    })
                    .await
                    .or_status("list entries")?;
                entries.extend(page.entries);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            output::print_entries(&entries, output.output);
        }
        EntryCommand::Show { id, admin, output } => {
            let mut client = clients::admin(&admin.admin_socket).await?;
            let entry = client.get_entry(GetEntryRequest { id }).await.or_status("show entry")?;
            output::print_entry(&entry, output.output);
        }
        EntryCommand::Update(args) => {
            let mut client = clients::admin(&args.admin.admin_socket).await?;
            let mut entry = client.get_entry(GetEntryRequest { id: args.id.clone() }).await.or_status("read entry")?;
            let expected_revision = entry.revision;
            if let Some(id) = args.spiffe_id {
                entry.spiffe_id = id.to_string();
            }
            if let Some(id) = args.parent_id {
                entry.parent_id = id.to_string();
            }
            apply_fields(&mut entry, args.fields, false);
            let updated = client
                .update_entry(UpdateEntryRequest { entry: Some(entry), expected_revision })
                .await
                .or_status("update entry")?;
            output::print_entry(&updated, args.output.output);
        }
        EntryCommand::Delete { id, admin } => {
            let mut client = clients::admin(&admin.admin_socket).await?;
            client.delete_entry(DeleteEntryRequest { id: id.clone() }).await.or_status("delete entry")?;
            println!("deleted entry {id}");
        }
    }
    Ok(())
}

/// Copies the given flags into `entry`; on update, absent flags keep the old values.
fn apply_fields(entry: &mut Entry, fields: EntryFields, create: bool) {
    if create || !fields.selectors.is_empty() {
        entry.selectors = fields.selectors.iter().map(ToString::to_string).collect();
    }
    if let Some(ttl) = fields.x509_ttl {
        entry.x509_ttl_seconds = ttl.as_secs();
    }
    if let Some(ttl) = fields.jwt_ttl {
        entry.jwt_ttl_seconds = ttl.as_secs();
    }
    if create || !fields.dns_names.is_empty() {
        entry.dns_names = fields.dns_names;
    }
    if let Some(hint) = fields.hint {
        entry.hint = hint;
    }
    if create || !fields.tools.is_empty() {
        entry.tools = fields.tools;
    }
    if create || !fields.audiences.is_empty() {
        entry.audiences = fields.audiences;
    }
    if let Some(c) = fields.max_classification {
        entry.max_classification = c;
    }
    if create || !fields.delegate_to.is_empty() {
        entry.delegate_to = fields.delegate_to;
    }
    if let Some(t) = fields.task_authority {
        entry.task_authority = t;
    }
}

pub(crate) async fn join_token(cmd: JoinTokenCommand) -> anyhow::Result<()> {
    let JoinTokenCommand::Create { name, ttl, admin, output } = cmd;
    let ttl_seconds = u32::try_from(ttl.as_secs()).context("--ttl is too long")?;
    let mut client = clients::admin(&admin.admin_socket).await?;
    let created =
        client.create_join_token(CreateJoinTokenRequest { name, ttl_seconds }).await.or_status("create join token")?;
    match output.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "token": created.token,
                "spiffe_id": created.spiffe_id,
                "expires_at": created.expires_at,
            })
        ),
        Output::Text => println!("{}", created.token),
    }
    Ok(())
}

pub(crate) async fn agent_list(admin: AdminSocket, output: OutputArg) -> anyhow::Result<()> {
    let mut client = clients::admin(&admin.admin_socket).await?;
    let agents = client.list_agents(ListAgentsRequest {}).await.or_status("list agents")?;
    output::print_agents(&agents.agents, output.output);
    Ok(())
}

pub(crate) async fn agent_ban(spiffe_id: SpiffeId, admin: AdminSocket) -> anyhow::Result<()> {
    let mut client = clients::admin(&admin.admin_socket).await?;
    let agent = client.ban_agent(BanAgentRequest { spiffe_id: spiffe_id.to_string() }).await.or_status("ban agent")?;
    println!("banned {}", agent.spiffe_id);
    Ok(())
}

/// `lanyard store backup|restore|migrate`.
pub(crate) async fn store(cmd: StoreCommand) -> anyhow::Result<()> {
    match cmd {
        StoreCommand::Backup { to, admin } => {
            let to = std::path::absolute(&to).with_context(|| format!("{}", to.display()))?;
            let mut client = clients::admin(&admin.admin_socket).await?;
            let request = BackupRequest { path: to.display().to_string() };
            let r = client.backup(request).await.or_status("backup")?;
            println!(
                "backed up {} records and {} audit records to {} (audit.log sha256 {})",
                r.records,
                r.audit_records,
                to.display(),
                r.audit_sha256
            );
        }
        StoreCommand::Restore { from, data_dir } => {
            let (source, target) = (from.clone(), data_dir.clone());
            let manifest = tokio::task::spawn_blocking(move || lanyard_store::SledStore::restore(&source, &target))
                .await?
                .with_context(|| format!("restore from {}", from.display()))?;
            println!(
                "restored {} records and {} audit records into {}; the audit chain verifies",
                manifest.records,
                manifest.audit_records,
                data_dir.display()
            );
        }
        StoreCommand::Migrate { from_data_dir, to } => {
            let source = lanyard_store::SledStore::open(&from_data_dir).with_context(|| {
                format!("cannot open the store in {} (is its server stopped?)", from_data_dir.display())
            })?;
            let target = lanyard_store::PgStore::connect(&to).await.context("--to")?;
            let export = source.export().await?;
            let r = target.import(export, &source).await.context("migrate")?;
            let chain = target.verify_audit_chain().await.context("the copied audit chain")?;
            println!(
                "migrated {} entries, {} agents, {} keys, {} tasks, {} revocations and {} audit records into {}; \
                 the audit chain verifies (head {})",
                r.entries,
                r.agents,
                r.keys,
                r.tasks,
                r.revocations,
                r.audit_records,
                lanyard_store::PgStore::describe(&to)?,
                lanyard_core::hex::encode(&chain.head)
            );
        }
    }
    Ok(())
}

/// `lanyard ca show|rotate|revoke`.
pub(crate) async fn ca(cmd: CaCommand) -> anyhow::Result<()> {
    let (admin, output) = match &cmd {
        CaCommand::Show { admin, output } | CaCommand::Rotate { admin, output, .. } => (admin, output),
        CaCommand::Revoke { admin, output, .. } => (admin, output),
    };
    let mut client = clients::admin(&admin.admin_socket).await?;
    let keys = match &cmd {
        CaCommand::Show { .. } => client.list_keys(ListKeysRequest {}).await.or_status("list keys")?,
        CaCommand::Rotate { kinds, .. } => {
            client.rotate_keys(RotateKeysRequest { kinds: kinds.clone() }).await.or_status("rotate keys")?
        }
        CaCommand::Revoke { id, .. } => {
            client.revoke_key(RevokeKeyRequest { id: id.clone() }).await.or_status("revoke key")?
        }
    };
    print_keys(&keys, output.output);
    Ok(())
}

fn print_keys(keys: &ListKeysResponse, output: Output) {
    let time = |t: i64| match t {
        0 => "-".to_owned(),
        t => t.to_string(),
    };
    match output {
        Output::Json => {
            let list: Vec<_> = keys
                .keys
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "id": k.id, "kind": k.kind, "phase": k.phase, "not_before": k.not_before,
                        "not_after": k.not_after,
                        "activated_at": (k.activated_at != 0).then_some(k.activated_at),
                        "revoked_at": (k.revoked_at != 0).then_some(k.revoked_at),
                    })
                })
                .collect();
            println!("{}", serde_json::json!({ "bundle_sequence": keys.bundle_sequence, "keys": list }));
        }
        Output::Text => {
            println!(
                "{:<10}  {:<9}  {:>10}  {:>10}  {:>10}  ID",
                "KIND", "PHASE", "NOT_BEFORE", "ACTIVATED", "NOT_AFTER"
            );
            for k in &keys.keys {
                let activated = time(k.activated_at);
                println!(
                    "{:<10}  {:<9}  {:>10}  {activated:>10}  {:>10}  {}",
                    k.kind, k.phase, k.not_before, k.not_after, k.id
                );
            }
            println!("bundle sequence {}", keys.bundle_sequence);
        }
    }
}

pub(crate) async fn bundle(cmd: BundleCommand) -> anyhow::Result<()> {
    let BundleCommand::Show { format, admin } = cmd;
    let mut client = clients::admin(&admin.admin_socket).await?;
    let proto = client.get_bundle(GetBundleRequest {}).await.or_status("show bundle")?;
    let bundle = lanyard_agent::bundle_from_proto(&proto)?;
    match format {
        BundleFormat::Pem => print!("{}", bundle.x509_pem()),
        BundleFormat::Spiffe => println!("{}", bundle.spiffe_json()?),
    }
    Ok(())
}
