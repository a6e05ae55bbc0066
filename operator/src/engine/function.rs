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
use std::sync::Arc;

use crate::crd::Architecture;

use super::artifacts::Artifacts;
use super::context::Ctx;
use super::driver::{Applied, Diff, Resource, Writer, delete_if_ours};
use super::errors::{AwsResultExt, FoundExt, is_role_not_ready};
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
    Delete,
}

pub use super::artifacts::code_sha256;

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
) -> Result<Diff<Change>, EngineError> {
    let resource = format!("lambda function {}", d.name);
    let Some(o) = o else {
        return Ok(Diff::changes(vec![Change::Create]));
    };
    owner.require_ours(&o.tags, &resource)?;
    match o.state.as_str() {
        "Pending" => return Ok(Diff::wait(format!("{resource} is Pending"))),
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
        return Ok(Diff::wait(format!("{resource}: an update is InProgress")));
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
    Ok(Diff::changes(changes))
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
    let Some(out) = ctx
        .clients
        .lambda
        .get_function()
        .function_name(name)
        .send()
        .await
        .found("GetFunction", &resource)?
    else {
        return Ok(None);
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

/// A missing or unreadable artifact is the spec's (or the installation's) problem.
fn unreadable(path: &std::path::Path, d: &Desired, e: std::io::Error) -> EngineError {
    EngineError::InvalidSpec {
        message: format!(
            "lambda artifact {} for architecture {} is missing or unreadable ({e}); build it with `make lambdas` or point --artifacts-dir at it",
            path.display(),
            d.architecture.as_str()
        ),
    }
}

/// One Lambda function: its desired state and code.
#[derive(Clone, Debug)]
pub struct Function {
    pub desired: Desired,
    pub component: Component,
    /// `outbox-operator <artifact> of <namespace>/<pipeline>`.
    pub description: String,
    /// The zip's path and base64(SHA-256) (empty for a function that is only removed); the
    /// bytes are read only to upload them.
    pub zip: PathBuf,
    pub sha: String,
    pub artifacts: Arc<Artifacts>,
    /// The detail of a delete action (why it goes).
    pub gone_because: &'static str,
}

impl Function {
    /// A function that is only removed (`why` is the delete action's detail).
    pub fn named(name: &str, component: Component, why: &'static str) -> Function {
        Function {
            desired: Desired {
                name: name.to_owned(),
                artifact: "",
                role_arn: String::new(),
                memory: 0,
                timeout: 0,
                architecture: Architecture::X86_64,
                env: BTreeMap::new(),
                tags: BTreeMap::new(),
            },
            component,
            description: String::new(),
            zip: PathBuf::new(),
            sha: String::new(),
            artifacts: Arc::default(),
            gone_because: why,
        }
    }

    /// The function with its code in `artifacts_dir` (hashed once per zip version).
    pub fn with_code(
        desired: Desired,
        component: Component,
        description: String,
        artifacts_dir: &std::path::Path,
        artifacts: &Arc<Artifacts>,
    ) -> Result<Function, EngineError> {
        let zip = artifact_path(artifacts_dir, desired.architecture, desired.artifact);
        let sha = artifacts
            .sha(&zip)
            .map_err(|e| unreadable(&zip, &desired, e))?;
        Ok(Function {
            desired,
            component,
            description,
            zip,
            sha,
            artifacts: artifacts.clone(),
            gone_because: "",
        })
    }

    /// The zip's bytes, to upload.
    fn code(&self) -> Result<Blob, EngineError> {
        let bytes = self
            .artifacts
            .read(&self.zip)
            .map_err(|e| unreadable(&self.zip, &self.desired, e))?;
        Ok(Blob::new(bytes))
    }

    fn environment(&self) -> Environment {
        Environment::builder()
            .set_variables(Some(self.desired.env.clone().into_iter().collect()))
            .build()
    }

    async fn create(
        &self,
        lambda: &aws_sdk_lambda::Client,
        state: &mut Option<Observed>,
    ) -> Result<Applied, EngineError> {
        let (d, resource) = (&self.desired, self.resource());
        let _turn = self.artifacts.upload_turn().await;
        let res = lambda
            .create_function()
            .function_name(&d.name)
            .runtime(Runtime::from(RUNTIME))
            .handler(HANDLER)
            .role(&d.role_arn)
            .code(FunctionCode::builder().zip_file(self.code()?).build())
            .memory_size(d.memory)
            .timeout(d.timeout)
            .architectures(LambdaArch::from(d.architecture.as_str()))
            .environment(self.environment())
            .description(&self.description)
            .set_tags(Some(d.tags.clone().into_iter().collect()))
            .publish(false)
            .send()
            .await
            .aws("CreateFunction", &resource);
        match res {
            Ok(c) => {
                *state = Some(Observed {
                    arn: c.function_arn().unwrap_or_default().to_owned(),
                    tags: d.tags.clone(),
                    ..Observed::default()
                });
                Ok(settle(&resource, c.state(), c.last_update_status()))
            }
            Err(e) if is_role_not_ready(&e) => Ok(Applied::NotYet(format!(
                "{resource}: its new execution role is not assumable by Lambda yet"
            ))),
            Err(e) => Err(e),
        }
    }

    async fn update(
        &self,
        lambda: &aws_sdk_lambda::Client,
        change: &Change,
        state: &Option<Observed>,
    ) -> Result<Applied, EngineError> {
        let (d, resource) = (&self.desired, self.resource());
        let arn = state.as_ref().map(|o| o.arn.clone()).unwrap_or_default();
        match change {
            Change::Configuration(_) => {
                let c = lambda
                    .update_function_configuration()
                    .function_name(&d.name)
                    .runtime(Runtime::from(RUNTIME))
                    .handler(HANDLER)
                    .role(&d.role_arn)
                    .memory_size(d.memory)
                    .timeout(d.timeout)
                    .environment(self.environment())
                    .send()
                    .await
                    .aws("UpdateFunctionConfiguration", &resource)?;
                Ok(settle(&resource, c.state(), c.last_update_status()))
            }
            Change::Code(_) => {
                let _turn = self.artifacts.upload_turn().await;
                let c = lambda
                    .update_function_code()
                    .function_name(&d.name)
                    .zip_file(self.code()?)
                    .architectures(LambdaArch::from(d.architecture.as_str()))
                    .publish(false)
                    .send()
                    .await
                    .aws("UpdateFunctionCode", &resource)?;
                Ok(settle(&resource, c.state(), c.last_update_status()))
            }
            Change::Untag(keys) => {
                lambda
                    .untag_resource()
                    .resource(arn)
                    .set_tag_keys(Some(keys.clone()))
                    .send()
                    .await
                    .aws("UntagResource", &resource)?;
                Ok(Applied::Done)
            }
            Change::Tag(t) => {
                lambda
                    .tag_resource()
                    .resource(arn)
                    .set_tags(Some(t.clone().into_iter().collect()))
                    .send()
                    .await
                    .aws("TagResource", &resource)?;
                Ok(Applied::Done)
            }
            Change::Create | Change::Delete => Ok(Applied::Done),
        }
    }
}

/// After a create or update: Done, or Settling while Lambda is still at it (the next update must
/// wait until this one is done).
fn settle(
    resource: &str,
    state: Option<&State>,
    last_update: Option<&LastUpdateStatus>,
) -> Applied {
    if state == Some(&State::Pending) {
        Applied::Settling(format!("{resource} is Pending"))
    } else if last_update == Some(&LastUpdateStatus::InProgress) {
        Applied::Settling(format!("{resource}: update InProgress"))
    } else {
        Applied::Done
    }
}

impl Resource for Function {
    type Observed = Option<Observed>;
    type Change = Change;

    fn component(&self) -> Component {
        self.component
    }

    fn resource(&self) -> String {
        format!("lambda function {}", self.desired.name)
    }

    async fn observe(&self, ctx: &Ctx<'_>) -> Result<Option<Observed>, EngineError> {
        observe(ctx, &self.desired.name).await
    }

    fn diff(&self, o: &Option<Observed>, owner: &tags::Owner) -> Result<Diff<Change>, EngineError> {
        diff(&self.desired, &self.sha, o.as_ref(), owner)
    }

    fn describe(&self, change: &Change) -> (Verb, String) {
        match change {
            Change::Create => (
                Verb::Create,
                format!(
                    "{RUNTIME}, {}, code {}",
                    self.desired.architecture.as_str(),
                    self.sha
                ),
            ),
            Change::Configuration(f) => (Verb::Update, format!("configuration: {}", f.join(", "))),
            Change::Code(why) => (Verb::Update, format!("code: {why}")),
            Change::Untag(keys) => (Verb::Update, tags::describe_removal(keys)),
            Change::Tag(t) => (Verb::Update, format!("tags: {}", tags::describe(t))),
            Change::Delete => (Verb::Delete, self.gone_because.to_owned()),
        }
    }

    async fn apply(
        &self,
        w: Writer<'_>,
        change: &Change,
        state: &mut Option<Observed>,
    ) -> Result<Applied, EngineError> {
        let lambda = &w.clients().lambda;
        match change {
            Change::Create => self.create(lambda, state).await,
            Change::Delete => {
                lambda
                    .delete_function()
                    .function_name(&self.desired.name)
                    .send()
                    .await
                    .found("DeleteFunction", &self.resource())?;
                Ok(Applied::Done)
            }
            other => self.update(lambda, other, state).await,
        }
    }

    /// Deletes the function when it is ours.
    async fn removal(
        &self,
        ctx: &Ctx<'_>,
        o: &Option<Observed>,
    ) -> Result<Diff<Change>, EngineError> {
        let tags = o.as_ref().map(|o| &o.tags);
        Ok(delete_if_ours(ctx, tags, &self.resource(), Change::Delete))
    }
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
        assert_eq!(diff(&d, "sha", Some(&o), &owner()).unwrap(), Diff::none());
    }

    #[test]
    fn edited_environment_and_new_code_are_updated() {
        let d = want();
        let mut o = have(&d, "old");
        o.env.insert("A".into(), "edited".into());
        assert_eq!(
            diff(&d, "new", Some(&o), &owner()).unwrap(),
            Diff::changes(vec![
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
        assert!(diff(&d, "sha", Some(&o), &owner()).unwrap().wait.is_some());
        o.state = "Active".into();
        o.last_update_status = "InProgress".into();
        o.memory = 1;
        assert!(diff(&d, "sha", Some(&o), &owner()).unwrap().wait.is_some());
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
