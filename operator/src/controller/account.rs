//! OutboxAccounts: a second kube runtime controller assumes each account's role (with the
//! external id from a Secret in the operator's namespace) and writes whether that worked, with
//! the assumed identity's account id or the STS error; the engine then serves the pipelines that
//! name the account. Before a pipeline with `spec.accountRef` reaches the engine, [`guard`]
//! checks that its namespace is allowed (no AWS call otherwise) and that the account is Ready.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::{Context, Error, FIELD_MANAGER, Trigger};
use crate::crd::{OutboxAccount, OutboxAccountStatus, OutboxPipeline, Reason};
use crate::engine::account::AssumeRole;
use crate::engine::{EngineError, ErrorClass, Reconciler};

/// Runs the OutboxAccount controller until `stop` fires.
pub async fn run_accounts<R: Reconciler>(ctx: Arc<Context<R>>, stop: Trigger) {
    let api: Api<OutboxAccount> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(stop)
        .run(reconcile_account, account_error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(%object, "account reconciled"),
                Err(controller::Error::ReconcilerFailed(e, object)) => {
                    warn!(%object, error = %e, "account reconcile failed")
                }
                Err(e) => warn!(error = %e, "account controller: watch or queue error"),
            }
        })
        .await;
}

/// One pass over an account: read its external id, assume its role, write its status. Ready is
/// checked again at every resync (credentials, trust policies and Secrets change).
pub async fn reconcile_account<R: Reconciler>(
    account: Arc<OutboxAccount>,
    ctx: Arc<Context<R>>,
) -> Result<Action, Error> {
    let name = account.name_any();
    let result = match target_of(&account, &ctx).await? {
        Ok(target) => match ctx.reconciler.assume(&target).await {
            Ok(who) => {
                info!(account = %name, id = %who.account, arn = %who.arn, "role assumed");
                ctx.reconciler.set_account(target);
                Ok((who.account, who.arn))
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let status = match &result {
        Ok((id, arn)) => status_of(&account, Ok((id.clone(), arn.clone()))),
        Err(e) => {
            ctx.reconciler.forget_account(&name);
            status_of(&account, Err(e))
        }
    };
    if account.status.as_ref() != Some(&status) {
        let api: Api<OutboxAccount> = Api::all(ctx.client.clone());
        let patch = Patch::Apply(json!({
            "apiVersion": OutboxAccount::api_version(&()),
            "kind": OutboxAccount::kind(&()),
            "status": status,
        }));
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &patch)
            .await
            .map_err(Error::Kube)?;
    }
    match result {
        Ok(_) => {
            ctx.reset_backoff(&key(&name));
            Ok(Action::requeue(ctx.resync_period))
        }
        Err(e) => Err(Error::Engine(e)),
    }
}

/// Transient STS errors back off per account; terminal ones wait for the resync or a change.
pub fn account_error_policy<R>(
    account: Arc<OutboxAccount>,
    error: &Error,
    ctx: Arc<Context<R>>,
) -> Action {
    let key = key(&account.name_any());
    match error {
        Error::Engine(e) if !e.is_transient() => {
            ctx.reset_backoff(&key);
            Action::requeue(ctx.resync_period)
        }
        _ => Action::requeue(ctx.next_backoff(&key)),
    }
}

fn key(name: &str) -> String {
    format!("OutboxAccount/{name}")
}

/// The status of an account: Ready with the assumed identity, or not with the error.
fn status_of(
    account: &OutboxAccount,
    result: Result<(String, String), &EngineError>,
) -> OutboxAccountStatus {
    let (ok, reason, message, id, arn) = match result {
        Ok((id, arn)) => (
            true,
            Reason::Reconciled,
            format!("assumed {} as {arn}", account.spec.role_arn),
            Some(id),
            Some(arn),
        ),
        Err(e) => (false, e.reason(), e.to_string(), None, None),
    };
    let old = account
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the status does.
    let last_transition_time = old
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    OutboxAccountStatus {
        observed_generation: account.metadata.generation,
        conditions: vec![Condition {
            type_: "Ready".to_owned(),
            status: status.to_owned(),
            reason: reason.as_str().to_owned(),
            message,
            last_transition_time,
            observed_generation: account.metadata.generation,
        }],
        account_id: id,
        assumed_arn: arn,
    }
}

/// The engine's view of an account: its role and the external id read from its Secret (in the
/// operator's namespace). The inner error is the account's (a missing Secret or key).
async fn target_of<R>(
    account: &OutboxAccount,
    ctx: &Context<R>,
) -> Result<Result<AssumeRole, EngineError>, Error> {
    let spec = &account.spec;
    let external_id = match &spec.external_id_secret_ref {
        None => None,
        Some(r) => {
            let namespace = ctx.client.default_namespace().to_owned();
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
            let secret = secrets.get_opt(&r.name).await.map_err(Error::Kube)?;
            let value = secret
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get(&r.key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty());
            match value {
                Some(v) => Some(v),
                None => {
                    return Ok(Err(EngineError::InvalidSpec {
                        message: format!(
                            "spec.externalIdSecretRef: Secret {namespace}/{} has no key {:?} with a value",
                            r.name, r.key
                        ),
                    }));
                }
            }
        }
    };
    Ok(Ok(AssumeRole {
        name: account.name_any(),
        role_arn: spec.role_arn.clone(),
        external_id,
        session_duration_seconds: spec.session_duration_seconds,
        region: spec.region.clone(),
    }))
}

/// Before the engine sees a pipeline that names an account: None to go on, or why not. A
/// namespace the account does not allow is InvalidSpec (no AWS call, no STS call); an account
/// that is missing or not Ready makes the pipeline wait (transient), with the account's error.
pub(super) async fn guard<R>(
    p: &OutboxPipeline,
    ctx: &Context<R>,
) -> Result<Option<EngineError>, Error> {
    let Some(r) = &p.spec.account_ref else {
        return Ok(None);
    };
    let accounts: Api<OutboxAccount> = Api::all(ctx.client.clone());
    let Some(account) = accounts.get_opt(&r.name).await.map_err(Error::Kube)? else {
        return Ok(Some(waiting(&r.name, "does not exist".to_owned())));
    };
    let namespace = p.namespace_or_default();
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let labels: BTreeMap<String, String> = namespaces
        .get_opt(namespace)
        .await
        .map_err(Error::Kube)?
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    if !account.allows(&labels) {
        return Ok(Some(EngineError::InvalidSpec {
            message: format!(
                "spec.accountRef: OutboxAccount {} does not allow namespace {namespace} (its spec.namespaceSelector does not select it; an administrator opts namespaces in)",
                r.name
            ),
        }));
    }
    if !account.is_ready() {
        let why = account
            .ready_message()
            .filter(|m| !m.is_empty())
            .map(|m| format!("is not Ready: {m}"))
            .unwrap_or_else(|| "is not Ready yet".to_owned());
        return Ok(Some(waiting(&r.name, why)));
    }
    Ok(None)
}

fn waiting(account: &str, why: String) -> EngineError {
    EngineError::Aws {
        resource: format!("OutboxAccount {account}"),
        operation: "AssumeRole".to_owned(),
        code: "AccountNotReady".to_owned(),
        message: format!("spec.accountRef: OutboxAccount {account} {why}"),
        class: ErrorClass::Transient,
    }
}
