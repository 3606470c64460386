//! `lanyard token verify`: a relying service's view of a token, through
//! `lanyard-verify` — against the bundle endpoint (bundle and revocation
//! feed) or a bundle file (no revocations).

use std::io::Read as _;

use anyhow::{Context as _, bail};
use lanyard_verify::{Endpoint, Expect, Verifier, VerifierConfig};

use crate::cli::TokenVerifyArgs;

/// Verifies the token; `Ok(false)` when it is refused (the reason printed).
pub(crate) async fn run(args: TokenVerifyArgs) -> anyhow::Result<bool> {
    let token = match args.token.as_str() {
        "-" => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the token from standard input")?;
            text.trim().to_owned()
        }
        token => token.trim().to_owned(),
    };
    let mut config = VerifierConfig::default();
    let verifier = match (&args.bundle_url, &args.bundle) {
        (Some(url), _) => {
            let cas = match &args.ca {
                Some(path) => {
                    let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                    let certs = lanyard_ca::bundle::parse_pem(&pem, "CERTIFICATE")
                        .with_context(|| format!("{} is not PEM", path.display()))?;
                    if certs.is_empty() {
                        bail!("{} holds no CERTIFICATE", path.display());
                    }
                    certs
                }
                None => Vec::new(),
            };
            let endpoint = Endpoint::new(url, &cas)?;
            let issuer = match &args.issuer {
                Some(issuer) => Some(issuer.clone()),
                None => lanyard_verify::discovered_issuer(&endpoint).await?,
            };
            if let Some(issuer) = issuer {
                config = config.issuer(issuer);
            }
            Verifier::start(endpoint, config).await?
        }
        (None, Some(file)) => {
            if let Some(issuer) = &args.issuer {
                config = config.issuer(issuer.clone());
            }
            Verifier::from_bundle_file(file, config.danger_without_revocations())?
        }
        (None, None) => bail!("give --bundle-url or --bundle"),
    };
    let claims = match args.jwt_svid {
        true => {
            if args.tool.is_some() || args.action.is_some() {
                bail!("--tool and --action apply to task tokens, not to --jwt-svid");
            }
            verifier.jwt_svid(&token, &args.audience).map(|svid| serde_json::Value::Object(svid.claims))
        }
        false => {
            let mut expect = Expect::audience(&args.audience);
            expect.tool = args.tool.as_deref();
            expect.action = args.action.as_deref();
            verifier
                .task_token(&token, &expect)
                .map(|claims| serde_json::to_value(claims).unwrap_or(serde_json::Value::Null))
        }
    };
    match claims {
        Ok(claims) => {
            if args.bundle_url.is_none() {
                eprintln!("lanyard: note: a bundle file has no revocation feed; revocations were not checked");
            }
            println!("{}", serde_json::to_string_pretty(&claims)?);
            Ok(true)
        }
        Err(e) => {
            eprintln!("lanyard: token refused: {e}");
            Ok(false)
        }
    }
}
