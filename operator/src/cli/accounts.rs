//! The AWS accounts of the standalone commands: `--account-role-arn`/`--external-id`, or the
//! OutboxAccounts in the manifests.

use clap::Args;

use super::Files;
use crate::engine::Engine;
use crate::manifest::{self, Document};

/// The flags of another AWS account, on every manifest command.
#[derive(Debug, Args)]
pub struct AccountFlags {
    /// Reconcile the pipelines in another AWS account: the IAM role to assume (see
    /// docs/install.md). Pipelines without spec.accountRef use it too. Without it, an
    /// OutboxAccount in the manifests serves the pipelines that name it.
    #[arg(long, env = "OUTBOX_ACCOUNT_ROLE_ARN", value_name = "ARN")]
    pub account_role_arn: Option<String>,

    /// The external id the role's trust policy requires (with --account-role-arn, or for the
    /// OutboxAccounts in the manifests: a cluster keeps it in a Secret the CLI cannot read).
    #[arg(
        long,
        env = "OUTBOX_EXTERNAL_ID",
        value_name = "ID",
        hide_env_values = true
    )]
    pub external_id: Option<String>,
}

/// Assumes each account's role (stopping with the STS error) and makes it the engine's.
pub(super) async fn register(
    engine: &Engine,
    accounts: Vec<crate::engine::account::AssumeRole>,
) -> Option<()> {
    for account in accounts {
        if let Err(e) = engine.account_identity(&account).await {
            eprintln!("error: {e}");
            return None;
        }
        engine.set_account(account);
    }
    Some(())
}

/// The accounts the standalone commands assume: `--account-role-arn` for every pipeline (those
/// without `spec.accountRef` are given the account "cli"), else the OutboxAccounts in the
/// manifests, with `--external-id`.
pub(super) fn cli_accounts(
    files: &Files,
    docs: &mut [Document],
) -> Result<Vec<crate::engine::account::AssumeRole>, manifest::ManifestError> {
    use crate::engine::account::AssumeRole;
    if let Some(role) = &files.account.account_role_arn {
        let mut names = std::collections::BTreeSet::new();
        for d in docs.iter_mut() {
            let r = d
                .pipeline
                .spec
                .account_ref
                .get_or_insert_with(|| crate::crd::AccountRef { name: "cli".into() });
            names.insert(r.name.clone());
        }
        return Ok(names
            .into_iter()
            .map(|name| AssumeRole {
                name,
                role_arn: role.clone(),
                external_id: files.account.external_id.clone(),
                session_duration_seconds: None,
                region: None,
            })
            .collect());
    }
    let mut out = Vec::new();
    for f in files.files.iter().filter(|f| *f != "-") {
        let text = std::fs::read_to_string(f).map_err(|source| manifest::ManifestError::Read {
            path: f.clone(),
            source,
        })?;
        for a in manifest::accounts(f, &text)? {
            out.push(AssumeRole {
                name: a.name_or_empty().to_owned(),
                role_arn: a.spec.role_arn.clone(),
                external_id: files.account.external_id.clone(),
                session_duration_seconds: a.spec.session_duration_seconds,
                region: a.spec.region.clone(),
            });
        }
    }
    Ok(out)
}
