//! Lambda functions: the relay, the writer (when enabled) and the bundled consumers.
//!
//! Runtime provided.al2023, handler `bootstrap`, code from
//! `<artifacts_dir>/<arch>/<function>/bootstrap.zip`. Code is uploaded only when
//! base64(SHA-256(zip)) differs from CodeSha256; configuration is updated only when it differs.
//! Lambda is asynchronous: a Pending function or an update InProgress makes the step wait
//! (Progressing with a requeue hint); it never sleeps.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    Architecture as LambdaArch, Environment, FunctionCode, FunctionConfiguration, LastUpdateStatus,
    Runtime, State,
};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::crd::Architecture;

use super::context::{Ctx, Progress};
use super::errors::{AwsResultExt, aws_error, is_not_found, is_role_not_ready};
use super::tags;
use super::{Component, EngineError, Verb};

pub const RUNTIME: &str = "provided.al2023";
pub const HANDLER: &str = "bootstrap";
/// Memory and timeout of the writer and the bundled consumers (the relay's come from the spec).
pub const SMALL_MEMORY_MB: i32 = 128;
pub const SMALL_TIMEOUT_SECONDS: i32 = 30;

/// The function as the spec wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub name: String,
    /// `relay`, `writer` or `consumer`: the artifact folder.
    pub artifact: &'static str,
    pub role_arn: String,
    pub memory: i32,
    pub timeout: i32,
    pub architecture: Architecture,
    pub env: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
}

/// The function as Lambda has it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Observed {
    pub arn: String,
    pub runtime: String,
    pub handler: String,
    pub role: String,
    pub memory: i32,
    pub timeout: i32,
    pub architecture: String,
    pub env: BTreeMap<String, String>,
    pub code_sha256: String,
    pub state: String,
    pub state_reason: String,
    pub last_update_status: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Create,
    /// Which configuration fields differ.
    Configuration(Vec<&'static str>),
    /// Why the code is uploaded.
    Code(&'static str),
    Untag(Vec<String>),
    Tag(BTreeMap<String, String>),
}

/// What the diff found: changes to apply, or a reason to wait first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Diff {
    Changes(Vec<Change>),
    Wait(String),
}

/// base64(SHA-256(zip)), as Lambda reports CodeSha256.
pub fn code_sha256(zip: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(zip))
}

/// The artifact path for an architecture and function.
pub fn artifact_path(dir: &std::path::Path, arch: Architecture, artifact: &str) -> PathBuf {
    dir.join(arch.as_str()).join(artifact).join("bootstrap.zip")
}

/// Pure: wanted vs observed (`code_sha` is the local zip's hash).
pub fn diff(
    d: &Desired,
    code_sha: &str,
    o: Option<&Observed>,
    owner: &tags::Owner,
) -> Result<Diff, EngineError> {
    let resource = format!("lambda function {}", d.name);
    let Some(o) = o else {
        return Ok(Diff::Changes(vec![Change::Create]));
    };
    owner.require_ours(&o.tags, &resource)?;
    match o.state.as_str() {
        "Pending" => return Ok(Diff::Wait(format!("{resource} is Pending"))),
        "Failed" => {
            return Err(EngineError::Aws {
                resource,
                operation: "GetFunction".to_owned(),
                code: "FunctionStateFailed".to_owned(),
                message: o.state_reason.clone(),
                class: super::ErrorClass::Terminal,
            });
        }
        _ => {}
    }
    if o.last_update_status == "InProgress" {
        return Ok(Diff::Wait(format!("{resource}: an update is InProgress")));
    }
    let fields: Vec<&'static str> = [
        ("runtime", o.runtime != RUNTIME),
        ("handler", o.handler != HANDLER),
        ("role", o.role != d.role_arn),
        ("memory", o.memory != d.memory),
        ("timeout", o.timeout != d.timeout),
        ("environment", o.env != d.env),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect();
    let mut changes = Vec::new();
    if !fields.is_empty() {
        changes.push(Change::Configuration(fields));
    }
    if o.architecture != d.architecture.as_str() {
        changes.push(Change::Code("architecture changed"));
    } else if o.code_sha256 != code_sha {
        changes.push(Change::Code("CodeSha256 differs from the artifact"));
    }
    changes.extend(tags::changes(&d.tags, &o.tags, Change::Untag, Change::Tag));
    Ok(Diff::Changes(changes))
}

fn parse(c: &FunctionConfiguration) -> Observed {
    Observed {
        arn: c.function_arn().unwrap_or_default().to_owned(),
        runtime: c
            .runtime()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        handler: c.handler().unwrap_or_default().to_owned(),
        role: c.role().unwrap_or_default().to_owned(),
        memory: c.memory_size().unwrap_or_default(),
        timeout: c.timeout().unwrap_or_default(),
        architecture: c
            .architectures()
            .first()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| "x86_64".to_owned()),
        env: c
            .environment()
            .and_then(|e| e.variables())
            .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        code_sha256: c.code_sha256().unwrap_or_default().to_owned(),
        state: c.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        state_reason: c.state_reason().unwrap_or_default().to_owned(),
        last_update_status: c
            .last_update_status()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        tags: BTreeMap::new(),
    }
}

pub async fn observe(ctx: &Ctx<'_>, name: &str) -> Result<Option<Observed>, EngineError> {
    let resource = format!("lambda function {name}");
    let out = match ctx
        .clients
        .lambda
        .get_function()
        .function_name(name)
        .send()
        .await
    {
        Ok(o) => o,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(aws_error(&e, "GetFunction", &resource)),
    };
    let Some(c) = out.configuration() else {
        return Ok(None);
    };
    let mut o = parse(c);
    o.tags = out
        .tags()
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(Some(o))
}

fn read_artifact(ctx: &Ctx<'_>, d: &Desired) -> Result<Vec<u8>, EngineError> {
    let path = artifact_path(&ctx.config.artifacts_dir, d.architecture, d.artifact);
    std::fs::read(&path).map_err(|e| EngineError::InvalidSpec {
        message: format!(
            "lambda artifact {} for architecture {} is missing or unreadable ({e}); build it with `make lambdas` or point --artifacts-dir at it",
            path.display(),
            d.architecture.as_str()
        ),
    })
}

/// What the function step hands on.
#[derive(Clone, Debug)]
pub struct FunctionOut {
    /// None only in plan mode for a new function, or while its role is not assumable yet.
    pub arn: Option<String>,
    pub progress: Progress,
}

fn settle(
    resource: &str,
    state: Option<&State>,
    last_update: Option<&LastUpdateStatus>,
) -> Progress {
    if state == Some(&State::Pending) {
        Progress::Waiting(format!("{resource} is Pending"))
    } else if last_update == Some(&LastUpdateStatus::InProgress) {
        Progress::Waiting(format!("{resource}: update InProgress"))
    } else {
        Progress::Ready
    }
}

/// Observe → diff → apply for one function.
pub async fn reconcile(
    ctx: &mut Ctx<'_>,
    component: Component,
    d: &Desired,
) -> Result<FunctionOut, EngineError> {
    let resource = format!("lambda function {}", d.name);
    let zip = read_artifact(ctx, d)?;
    let sha = code_sha256(&zip);
    let observed = observe(ctx, &d.name).await?;
    let mut out = FunctionOut {
        arn: observed.as_ref().map(|o| o.arn.clone()),
        progress: Progress::Ready,
    };
    let changes = match diff(d, &sha, observed.as_ref(), &ctx.owner)? {
        Diff::Wait(msg) => {
            out.progress = Progress::Waiting(msg);
            return Ok(out);
        }
        Diff::Changes(c) => c,
    };
    let lambda = ctx.clients.lambda.clone();
    let environment = Environment::builder()
        .set_variables(Some(d.env.clone().into_iter().collect()))
        .build();
    for change in changes {
        let (verb, detail) = match &change {
            Change::Create => (
                Verb::Create,
                format!("{RUNTIME}, {}, code {sha}", d.architecture.as_str()),
            ),
            Change::Configuration(f) => (Verb::Update, format!("configuration: {}", f.join(", "))),
            Change::Code(why) => (Verb::Update, format!("code: {why}")),
            Change::Untag(keys) => (Verb::Update, tags::describe_removal(keys)),
            Change::Tag(t) => (Verb::Update, format!("tags: {}", tags::describe(t))),
        };
        if !ctx.apply {
            ctx.record(component, verb, &resource, detail);
            continue;
        }
        let settled = match &change {
            Change::Create => {
                let res = lambda
                    .create_function()
                    .function_name(&d.name)
                    .runtime(Runtime::from(RUNTIME))
                    .handler(HANDLER)
                    .role(&d.role_arn)
                    .code(
                        FunctionCode::builder()
                            .zip_file(Blob::new(zip.clone()))
                            .build(),
                    )
                    .memory_size(d.memory)
                    .timeout(d.timeout)
                    .architectures(LambdaArch::from(d.architecture.as_str()))
                    .environment(environment.clone())
                    .description(format!(
                        "outbox-operator {} of {}",
                        d.artifact, ctx.owner.pipeline
                    ))
                    .set_tags(Some(d.tags.clone().into_iter().collect()))
                    .publish(false)
                    .send()
                    .await
                    .aws("CreateFunction", &resource);
                match res {
                    Ok(c) => {
                        out.arn = c.function_arn().map(str::to_owned);
                        settle(&resource, c.state(), c.last_update_status())
                    }
                    Err(e) if is_role_not_ready(&e) => {
                        out.progress = Progress::Waiting(format!(
                            "{resource}: its new execution role is not assumable by Lambda yet"
                        ));
                        return Ok(out);
                    }
                    Err(e) => return Err(e),
                }
            }
            Change::Configuration(_) => {
                let c = lambda
                    .update_function_configuration()
                    .function_name(&d.name)
                    .runtime(Runtime::from(RUNTIME))
                    .handler(HANDLER)
                    .role(&d.role_arn)
                    .memory_size(d.memory)
                    .timeout(d.timeout)
                    .environment(environment.clone())
                    .send()
                    .await
                    .aws("UpdateFunctionConfiguration", &resource)?;
                settle(&resource, c.state(), c.last_update_status())
            }
            Change::Code(_) => {
                let c = lambda
                    .update_function_code()
                    .function_name(&d.name)
                    .zip_file(Blob::new(zip.clone()))
                    .architectures(LambdaArch::from(d.architecture.as_str()))
                    .publish(false)
                    .send()
                    .await
                    .aws("UpdateFunctionCode", &resource)?;
                settle(&resource, c.state(), c.last_update_status())
            }
            Change::Untag(keys) => {
                lambda
                    .untag_resource()
                    .resource(out.arn.clone().unwrap_or_default())
                    .set_tag_keys(Some(keys.clone()))
                    .send()
                    .await
                    .aws("UntagResource", &resource)?;
                Progress::Ready
            }
            Change::Tag(t) => {
                lambda
                    .tag_resource()
                    .resource(out.arn.clone().unwrap_or_default())
                    .set_tags(Some(t.clone().into_iter().collect()))
                    .send()
                    .await
                    .aws("TagResource", &resource)?;
                Progress::Ready
            }
        };
        ctx.record(component, verb, &resource, detail);
        if !settled.is_ready() {
            // The next update must wait until this one is done.
            out.progress = settled;
            return Ok(out);
        }
    }
    Ok(out)
}

/// Deletes a function when it is ours.
pub async fn delete(
    ctx: &mut Ctx<'_>,
    component: Component,
    name: &str,
) -> Result<(), EngineError> {
    let resource = format!("lambda function {name}");
    let Some(o) = observe(ctx, name).await? else {
        return Ok(());
    };
    if ctx.owner.leaves_alone(&o.tags, &resource) {
        return Ok(());
    }
    if !ctx.apply {
        ctx.record(component, Verb::Delete, &resource, "no longer in the spec");
        return Ok(());
    }
    match ctx
        .clients
        .lambda
        .delete_function()
        .function_name(name)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(aws_error(&e, "DeleteFunction", &resource)),
    }
    ctx.record(component, Verb::Delete, &resource, "");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tags::Owner;

    fn owner() -> Owner {
        tags::test_owner()
    }

    fn want() -> Desired {
        Desired {
            name: "f".into(),
            artifact: "relay",
            role_arn: "arn:role".into(),
            memory: 256,
            timeout: 60,
            architecture: Architecture::X86_64,
            env: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
            tags: owner().desired_tags(&BTreeMap::new()),
        }
    }

    fn have(d: &Desired, sha: &str) -> Observed {
        Observed {
            arn: "arn:f".into(),
            runtime: RUNTIME.into(),
            handler: HANDLER.into(),
            role: d.role_arn.clone(),
            memory: d.memory,
            timeout: d.timeout,
            architecture: "x86_64".into(),
            env: d.env.clone(),
            code_sha256: sha.into(),
            state: "Active".into(),
            state_reason: String::new(),
            last_update_status: "Successful".into(),
            tags: d.tags.clone(),
        }
    }

    #[test]
    fn code_sha_is_base64_of_sha256() {
        // echo -n "" | sha256sum → e3b0c442...; base64 of those bytes:
        assert_eq!(
            code_sha256(b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn in_sync_function_needs_nothing() {
        let d = want();
        let o = have(&d, "sha");
        assert_eq!(
            diff(&d, "sha", Some(&o), &owner()).unwrap(),
            Diff::Changes(vec![])
        );
    }

    #[test]
    fn edited_environment_and_new_code_are_updated() {
        let d = want();
        let mut o = have(&d, "old");
        o.env.insert("A".into(), "edited".into());
        assert_eq!(
            diff(&d, "new", Some(&o), &owner()).unwrap(),
            Diff::Changes(vec![
                Change::Configuration(vec!["environment"]),
                Change::Code("CodeSha256 differs from the artifact")
            ])
        );
    }

    #[test]
    fn pending_or_in_progress_waits() {
        let d = want();
        let mut o = have(&d, "sha");
        o.state = "Pending".into();
        assert!(matches!(
            diff(&d, "sha", Some(&o), &owner()).unwrap(),
            Diff::Wait(_)
        ));
        o.state = "Active".into();
        o.last_update_status = "InProgress".into();
        o.memory = 1;
        assert!(matches!(
            diff(&d, "sha", Some(&o), &owner()).unwrap(),
            Diff::Wait(_)
        ));
    }

    #[test]
    fn foreign_function_is_a_conflict() {
        let d = want();
        let mut o = have(&d, "sha");
        o.tags.clear();
        assert_eq!(
            diff(&d, "sha", Some(&o), &owner()).unwrap_err().reason(),
            crate::crd::Reason::Conflict
        );
    }
}
