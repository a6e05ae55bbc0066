//! Pre-flight: every check that can fail without side effects, run before the first resource
//! step, so an invalid pipeline fails with zero mutating calls (and `plan` reports the same
//! error). Pure checks first (event patterns, name and tag limits, ARN region/account, artifact
//! zips), then reads: the pipeline's own bus (ours or absent; read once, the bus step reuses it),
//! the account (from that bus's ARN, else the default bus's), user functions (existence and the
//! opt-in tag), SQS queues (existence, [`super::queues`]), a bus the pipeline does not own (exists
//! when in its account) and the permissions boundary policy.

use std::collections::BTreeMap;

use crate::crd::{Architecture, ConsumerSpec};

use super::context::{AwsEnv, Ctx};
use super::errors::{AwsResultExt, aws_error, is_not_found};
use super::names::{BUCKET_MAX, FUNCTION_MAX, ROLE_MAX, RULE_MAX, TABLE_MAX};
use super::tags::{CLUSTER_ID, Ownership, PIPELINE};
use super::{Component, EngineError, bus, function, pattern};

/// The tag a user's Lambda function needs before a pipeline may add an invoke permission to it:
/// `all`, or a space-separated list of `namespace/name` pipeline keys.
pub const ALLOW_PIPELINES_TAG: &str = "outbox.dev/allow-pipelines";
/// The [`ALLOW_PIPELINES_TAG`] value that allows every pipeline (`*` is not a valid AWS tag
/// character, so it is accepted only where a tag could hold it).
pub const ALLOW_ALL: &str = "all";

const TAG_KEY_MAX: usize = 128;
const TAG_VALUE_MAX: usize = 256;
const STATEMENT_ID_MAX: usize = 100;

mod events;

type Failure = (Component, EngineError);

fn invalid(c: Component, message: String) -> Failure {
    (c, EngineError::InvalidSpec { message })
}

/// Runs every pre-flight check; the first failure names its component and field.
pub async fn check(ctx: &Ctx<'_>) -> Result<(), Failure> {
    events::check(ctx.spec).map_err(|m| invalid(Component::Relay, m))?;
    patterns(ctx)?;
    names(ctx)?;
    tags(ctx)?;
    artifacts(ctx)?;
    // The pipeline's own bus, read once: its ARN tells the account, and the bus step gets this
    // observation rather than reading the bus again. It is the pass's first AWS call, so its
    // failure (credentials, an account not reachable) counts where the account's read did: Table.
    let own_bus = match ctx.spec.bus.existing() {
        Some(_) => None,
        None => Some(
            bus::observe_for_pass(ctx, &ctx.names.bus)
                .await
                .map_err(|e| (Component::Table, e))?,
        ),
    };
    let known = own_bus
        .as_ref()
        .and_then(|b| b.as_ref())
        .map(|b| b.arn.as_str());
    let account = account(ctx, known)
        .await
        .map_err(|e| (Component::Table, e))?;
    arns(ctx, &ctx.env.region, account.as_deref())?;
    bus::existing_allows_consumers(ctx.spec, account.as_deref())
        .map_err(|m| invalid(Component::Consumers, m))?;
    user_functions(ctx).await?;
    super::queues::exist(ctx).await?;
    match own_bus {
        Some(observed) => bus_is_ours(ctx, observed.as_ref())?,
        None => existing_bus_exists(ctx, account.as_deref()).await?,
    }
    boundary(ctx).await
}

fn patterns(ctx: &Ctx<'_>) -> Result<(), Failure> {
    for (i, c) in ctx.spec.consumers.iter().enumerate() {
        pattern::validate(
            &format!("spec.consumers[{i}].eventPattern"),
            &c.event_pattern,
        )
        .map_err(|m| invalid(Component::Consumers, m))?;
    }
    Ok(())
}

fn within(c: Component, what: &str, name: &str, max: usize, cause: &str) -> Result<(), Failure> {
    if name.chars().count() > max {
        return Err(invalid(
            c,
            format!(
                "{what} {name:?} is {} characters, AWS allows {max} ({cause})",
                name.chars().count()
            ),
        ));
    }
    Ok(())
}

/// Every derived name within AWS's limits and character sets.
fn names(ctx: &Ctx<'_>) -> Result<(), Failure> {
    use Component::{Bus, Consumers, Relay, Table};
    let n = &ctx.names;
    let table = &n.table;
    let table_chars = table
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if table.len() < 3 || table.len() > TABLE_MAX || !table_chars {
        return Err(invalid(
            Table,
            format!(
                "spec.table.name {table:?} must be 3 to {TABLE_MAX} characters of [A-Za-z0-9_.-]"
            ),
        ));
    }
    let bus_chars = n
        .bus
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    let owned = ctx.spec.bus.existing_arn.is_none();
    if owned
        && (n.bus.is_empty()
            || n.bus.len() > super::names::BUS_MAX
            || !bus_chars
            || n.bus == "default")
    {
        return Err(invalid(
            Bus,
            format!(
                "spec.bus.name {:?} must be 1 to {} characters of [A-Za-z0-9_.-] and not \"default\"",
                n.bus,
                super::names::BUS_MAX
            ),
        ));
    }
    let cause = "derived from the pipeline's namespace and name";
    for f in [&n.relay_function, &n.writer_function] {
        within(Relay, "function name", f, FUNCTION_MAX, cause)?;
        within(Relay, "role name", &n.role(f), ROLE_MAX, cause)?;
    }
    let bucket = n.bucket(&ctx.env.account, &ctx.env.region);
    within(Relay, "failure bucket name", &bucket, BUCKET_MAX, cause)?;
    for (i, c) in ctx.spec.consumers.iter().enumerate() {
        let cause = format!("spec.consumers[{i}].name {:?} is too long", c.name);
        within(Consumers, "rule name", &n.rule(&c.name), RULE_MAX, &cause)?;
        let f = n.consumer_function(&c.name);
        within(Consumers, "function name", &f, FUNCTION_MAX, &cause)?;
        if !f.ends_with(&c.name) {
            return Err(invalid(
                Consumers,
                format!(
                    "spec.consumers[{i}].name {:?} is too long for a function name",
                    c.name
                ),
            ));
        }
        let sid = n.statement_id(&c.name);
        within(
            Consumers,
            "permission statement id",
            &sid,
            STATEMENT_ID_MAX,
            &cause,
        )?;
    }
    Ok(())
}

/// Every tag (the spec's and the ownership tags, which hold the cluster id and the pipeline key)
/// within AWS's tag limits.
fn tags(ctx: &Ctx<'_>) -> Result<(), Failure> {
    for (k, v) in &ctx.tags {
        let cause = match k.as_str() {
            CLUSTER_ID => "the operator's --cluster-id".to_owned(),
            PIPELINE => "the pipeline's namespace/name".to_owned(),
            _ => format!("spec.tags.{k}"),
        };
        if k.is_empty() || k.chars().count() > TAG_KEY_MAX || k.starts_with("aws:") {
            return Err(invalid(
                Component::Table,
                format!(
                    "tag key {k:?} ({cause}) must be 1 to {TAG_KEY_MAX} characters and not start with \"aws:\""
                ),
            ));
        }
        if v.chars().count() > TAG_VALUE_MAX {
            return Err(invalid(
                Component::Table,
                format!(
                    "tag {k} is {} characters ({cause}); AWS allows at most {TAG_VALUE_MAX}",
                    v.chars().count()
                ),
            ));
        }
    }
    Ok(())
}

fn bundled(c: &ConsumerSpec) -> bool {
    c.target.lambda_function_arn.is_none() && c.target.sqs_queue_arn.is_none()
}

/// The zip of every function the pipeline deploys exists for the spec's architecture.
fn artifacts(ctx: &Ctx<'_>) -> Result<(), Failure> {
    let arch = ctx.spec.relay.architecture;
    let mut wanted = vec![(Component::Relay, "relay")];
    if ctx.spec.writer.enabled {
        wanted.push((Component::Relay, "writer"));
    }
    if ctx.spec.consumers.iter().any(bundled) {
        wanted.push((Component::Consumers, "consumer"));
    }
    for (c, artifact) in wanted {
        let path = function::artifact_path(&ctx.config.artifacts_dir, arch, artifact);
        if !path.is_file() {
            let how = match arch {
                Architecture::X86_64 => {
                    "build it with `make lambdas` or point --artifacts-dir at it"
                }
                Architecture::Arm64 => {
                    "arm64 is not available from this operator: its image was built with LAMBDA_ARM64=0, or (CLI) build the zips with `rustup target add aarch64-unknown-linux-gnu && make lambdas`; or set spec.relay.architecture: x86_64"
                }
            };
            return Err(invalid(
                c,
                format!(
                    "lambda artifact {} for architecture {} (spec.relay.architecture) is missing; {how}",
                    path.display(),
                    arch.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// The pipeline's account: the context's once known, else from the ARN of a bus of the
/// pipeline's account already read this pass (`bus_arn`), else from the region's default bus.
async fn account(ctx: &Ctx<'_>, bus_arn: Option<&str>) -> Result<Option<String>, EngineError> {
    if ctx.env.is_known() {
        return Ok(Some(ctx.env.account.clone()));
    }
    if let Some(env) = bus_arn.and_then(AwsEnv::from_arn) {
        return Ok(Some(env.account));
    }
    let out = ctx
        .clients
        .eventbridge
        .describe_event_bus()
        .send()
        .await
        .aws("DescribeEventBus", "eventbridge bus default")?;
    Ok(out
        .arn()
        .and_then(AwsEnv::from_arn)
        .map(|e| e.account)
        .filter(|a| !a.is_empty()))
}

/// One ARN the spec names: its field, the services it may belong to, and whether it must be in
/// the pipeline's account.
struct SpecArn<'s> {
    field: String,
    arn: &'s str,
    services: &'static [&'static str],
    same_account: bool,
    component: Component,
}

fn spec_arns<'s>(ctx: &Ctx<'s>) -> Vec<SpecArn<'s>> {
    let mut out = Vec::new();
    if let Some(arn) = &ctx.spec.bus.existing_arn {
        out.push(SpecArn {
            field: "spec.bus.existingArn".into(),
            arn,
            services: &["events"],
            same_account: false,
            component: Component::Bus,
        });
    }
    if let Some(arn) = &ctx.spec.relay.on_failure_destination_arn {
        out.push(SpecArn {
            field: "spec.relay.onFailureDestinationArn".into(),
            arn,
            services: &["sqs", "sns", "s3"],
            same_account: true,
            component: Component::Relay,
        });
    }
    for (i, c) in ctx.spec.consumers.iter().enumerate() {
        let field = |f: &str| format!("spec.consumers[{i}].{f}");
        let consumers = Component::Consumers;
        if let Some(arn) = &c.target.lambda_function_arn {
            out.push(SpecArn {
                field: field("target.lambdaFunctionArn"),
                arn,
                services: &["lambda"],
                same_account: false,
                component: consumers,
            });
        }
        if let Some(arn) = &c.target.sqs_queue_arn {
            out.push(SpecArn {
                field: field("target.sqsQueueArn"),
                arn,
                services: &["sqs"],
                same_account: false,
                component: consumers,
            });
        }
        if let Some(arn) = &c.dead_letter_arn {
            out.push(SpecArn {
                field: field("deadLetterArn"),
                arn,
                services: &["sqs"],
                same_account: true,
                component: consumers,
            });
        }
    }
    out
}

/// Pure: every ARN of the spec is of the right service, in the pipeline's region (S3 ARNs carry
/// none) and, for destinations and dead-letter queues, in the pipeline's account (when known).
fn arns(ctx: &Ctx<'_>, region: &str, account: Option<&str>) -> Result<(), Failure> {
    for a in spec_arns(ctx) {
        let parts: Vec<&str> = a.arn.splitn(6, ':').collect();
        let (service, arn_region, arn_account) = match parts.as_slice() {
            ["arn", _, service, region, account, rest] if !rest.is_empty() => {
                (*service, *region, *account)
            }
            _ => {
                return Err(invalid(
                    a.component,
                    format!("{} {:?} is not an ARN", a.field, a.arn),
                ));
            }
        };
        if !a.services.contains(&service) {
            return Err(invalid(
                a.component,
                format!(
                    "{} {} is a {service} ARN; expected {}",
                    a.field,
                    a.arn,
                    a.services.join(" or ")
                ),
            ));
        }
        if service != "s3" && region != "<region>" && arn_region != region {
            return Err(invalid(
                a.component,
                format!(
                    "{} {} is in region {arn_region}; the pipeline is in {region} and EventBridge and Lambda reach only their own region",
                    a.field, a.arn
                ),
            ));
        }
        if let Some(account) = account
            && a.same_account
            && service != "s3"
            && arn_account != account
        {
            return Err(invalid(
                a.component,
                format!(
                    "{} {} is in account {arn_account}; it must be in the pipeline's account {account}",
                    a.field, a.arn
                ),
            ));
        }
    }
    Ok(())
}

/// `arn:...:function:name` without a version or alias qualifier.
fn unqualified(arn: &str) -> String {
    arn.split(':').take(7).collect::<Vec<_>>().join(":")
}

/// True when `value` (of [`ALLOW_PIPELINES_TAG`]) allows the pipeline `key`.
pub fn allows(value: &str, key: &str) -> bool {
    value
        .split_whitespace()
        .any(|v| v == ALLOW_ALL || v == "*" || v == key)
}

/// A user's function exists and, unless this pipeline owns it, carries the opt-in tag.
async fn user_functions(ctx: &Ctx<'_>) -> Result<(), Failure> {
    let fail = |e| (Component::Consumers, e);
    for (i, c) in ctx.spec.consumers.iter().enumerate() {
        let Some(arn) = &c.target.lambda_function_arn else {
            continue;
        };
        let field = format!("spec.consumers[{i}].target.lambdaFunctionArn");
        let resource = format!("lambda function {arn}");
        match ctx
            .clients
            .lambda
            .get_function()
            .function_name(arn)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                return Err(invalid(
                    Component::Consumers,
                    format!("{field} {arn} does not exist"),
                ));
            }
            Err(e) => return Err(fail(aws_error(&e, "GetFunction", &resource))),
        }
        let tags: BTreeMap<String, String> = ctx
            .clients
            .lambda
            .list_tags()
            .resource(unqualified(arn))
            .send()
            .await
            .aws("ListTags", &resource)
            .map_err(fail)?
            .tags()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        if ctx.owner.classify(&tags) == Ownership::Ours {
            continue;
        }
        let key = &ctx.owner.pipeline;
        if !tags
            .get(ALLOW_PIPELINES_TAG)
            .is_some_and(|v| allows(v, key))
        {
            return Err(invalid(
                Component::Consumers,
                format!(
                    "{field} {arn} is not this pipeline's: tag the function {ALLOW_PIPELINES_TAG}={key} (a space-separated list of namespace/name, or {ALLOW_ALL}) to let the pipeline add its EventBridge invoke permission"
                ),
            ));
        }
    }
    Ok(())
}

/// The pipeline's own bus, if it exists, is this pipeline's (the bus step would stop there with
/// a Conflict).
fn bus_is_ours(ctx: &Ctx<'_>, observed: Option<&bus::Observed>) -> Result<(), Failure> {
    if let Some(observed) = observed {
        let name = &ctx.names.bus;
        ctx.owner
            .require_ours(&observed.tags, &format!("eventbridge bus {name}"))
            .map_err(|e| (Component::Bus, e))?;
    }
    Ok(())
}

/// A bus the pipeline does not own (`spec.bus.existingArn`) in its own account must exist.
async fn existing_bus_exists(ctx: &Ctx<'_>, account: Option<&str>) -> Result<(), Failure> {
    let Some((bus_account, _)) = ctx.spec.bus.existing() else {
        return Ok(());
    };
    if account.is_some_and(|a| a == bus_account)
        && bus::observe(ctx, &ctx.names.bus)
            .await
            .map_err(|e| (Component::Bus, e))?
            .is_none()
    {
        let arn = ctx.spec.bus.existing_arn.as_deref().unwrap_or_default();
        return Err(invalid(
            Component::Bus,
            format!("spec.bus.existingArn {arn} does not exist"),
        ));
    }
    Ok(())
}

/// The permissions boundary policy (--permissions-boundary-arn), when set, exists.
async fn boundary(ctx: &Ctx<'_>) -> Result<(), Failure> {
    let Some(arn) = &ctx.config.permissions_boundary_arn else {
        return Ok(());
    };
    match ctx.clients.iam.get_policy().policy_arn(arn).send().await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Err(invalid(
            Component::Relay,
            format!("--permissions-boundary-arn {arn} does not exist"),
        )),
        Err(e) => Err((
            Component::Relay,
            aws_error(&e, "GetPolicy", &format!("iam policy {arn}")),
        )),
    }
}

#[cfg(test)]
mod tests;
