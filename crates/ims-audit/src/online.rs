//! Audits answered by the service, so that an online auditor gets in milliseconds what a replay of
//! the whole region would take seconds (and its memory) to say:
//! - `ims.v1.<region>.audit.who-could-use`, by the process that holds the region's log: the
//!   image's own stream and the tenants' registrations there;
//! - `ims.v1.<region>.audit.as-of`, by the process that holds the region's read models: the
//!   nearest chain of snapshots and the events after it.

use std::future::Future;

use async_nats::service::{endpoint::Endpoint, Service, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use ims_bus::{stop_taking, LeaseDeadline, RoleError, SERVICE_VERSION};
use std::path::PathBuf;
use std::sync::Arc;

use ims_domain::{ImageId, RegionId, TenantId};
use ims_log::EventLog;
use ims_wire::queries::{AsOfRequest, WhoCouldUseRequest};
use ims_wire::views::QueryError;
use ims_wire::{Query, QueryParams, Subjects, WireError, WireErrorCode};
use serde_json::{json, Value};

use crate::replay::{replay_from_snapshots, who_could_use_offline, Until};
use crate::{AuditError, LogSource};

/// How long an auditor waits for the answer.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves the audit endpoints of `region` from `log` until `stop` completes; with `lease`,
/// only while it lasts.
pub async fn serve_audits(
    client: async_nats::Client,
    subjects: Subjects,
    region: RegionId,
    log: EventLog,
    lease: Option<LeaseDeadline>,
    stop: impl Future<Output = ()>,
) -> Result<(), RoleError> {
    let (service, mut who_could_use) = audit_endpoint(
        &client,
        &subjects,
        &region,
        "who-could-use",
        "who could use an image, from its stream",
    )
    .await?;
    tokio::pin!(stop);
    let mut stopping = false;
    loop {
        let request = tokio::select! {
            _ = &mut stop, if !stopping => {
                stop_taking([&mut who_could_use]).await;
                stopping = true;
                continue;
            }
            Some(request) = who_could_use.next() => request,
            else => break,
        };
        let refusal = lease.as_ref().and_then(|lease| lease.refusal(&region));
        let answer = answer_who_could_use(&log, &request.message.payload, refusal);
        if let Err(error) = request.respond(Ok(Bytes::from(answer))).await {
            tracing::debug!(%error, "answering who-could-use failed");
        }
    }
    service
        .stop()
        .await
        .map_err(|e| RoleError::nats("stopping the ims-audit service", e))
}

/// Registers an `ims-audit` service instance (NATS micro-service discovery) with one endpoint,
/// `ims.v1.<region>.audit.<name>`, that answers `what`.
async fn audit_endpoint(
    client: &async_nats::Client,
    subjects: &Subjects,
    region: &RegionId,
    name: &str,
    what: &str,
) -> Result<(Service, Endpoint), RoleError> {
    let service = client
        .service_builder()
        .description(format!("ims audit service of region {region}: {what}"))
        .start("ims-audit", SERVICE_VERSION)
        .await
        .map_err(|e| RoleError::nats("registering the ims-audit service", e))?;
    let endpoint = service
        .endpoint_builder()
        .name(name)
        .add(subjects.audit(region, name))
        .await
        .map_err(|e| RoleError::nats(format!("adding the {name} endpoint"), e))?;
    Ok((service, endpoint))
}

/// How many as-of requests are answered at once: each may replay up to an interval of events.
const AS_OF_AT_ONCE: usize = 2;

/// Serves `ims.v1.<region>.audit.as-of` until `stop` completes: the read models as of a past
/// moment, from the nearest chain of `snapshots` and the events after it, read through
/// `log.read`. Memory grows with those events, not with the region.
pub async fn serve_as_of(
    client: async_nats::Client,
    subjects: Subjects,
    region: RegionId,
    snapshots: PathBuf,
    stop: impl Future<Output = ()>,
) -> Result<(), RoleError> {
    let (service, mut as_of) = audit_endpoint(
        &client,
        &subjects,
        &region,
        "as-of",
        "a query's answer as of a past moment",
    )
    .await?;
    let source = Arc::new(LogSource::online(client.clone(), &subjects, &region));
    let (region, snapshots) = (Arc::new(region), Arc::new(snapshots));
    let at_once = Arc::new(tokio::sync::Semaphore::new(AS_OF_AT_ONCE));
    tokio::pin!(stop);
    let mut stopping = false;
    loop {
        let request = tokio::select! {
            _ = &mut stop, if !stopping => {
                stop_taking([&mut as_of]).await;
                stopping = true;
                continue;
            }
            Some(request) = as_of.next() => request,
            else => break,
        };
        let permit = at_once.clone().acquire_owned().await.expect("never closed");
        let (source, region, snapshots) = (source.clone(), region.clone(), snapshots.clone());
        tokio::spawn(async move {
            let answer = answer_as_of(&source, &region, &snapshots, &request.message.payload).await;
            if let Err(error) = request.respond(Ok(Bytes::from(answer))).await {
                tracing::debug!(%error, "answering as-of failed");
            }
            drop(permit);
        });
    }
    service
        .stop()
        .await
        .map_err(|e| RoleError::nats("stopping the ims-audit service", e))
}

/// The answer to one `as-of` request, or the error as a failed query's body.
async fn answer_as_of(
    source: &LogSource,
    region: &RegionId,
    snapshots: &std::path::Path,
    payload: &[u8],
) -> Vec<u8> {
    let answer = async {
        let request: AsOfRequest = serde_json::from_slice(payload).map_err(|e| {
            WireError::new(
                WireErrorCode::InvalidArgument,
                format!(
                    "as-of expects {{\"tenant\", \"query\", \"params\", \"position\" or \"at_ms\"}}: {e}"
                ),
            )
        })?;
        let tenant = TenantId::parse(&request.tenant).map_err(WireError::from)?;
        let query = Query::parse(&request.query)?;
        let until = until_of("as-of", request.position, request.at_ms)?;
        let replayed = replay_from_snapshots(source, region, until, snapshots, |_| {})
            .await
            .map_err(unavailable)?;
        let answer = replayed
            .query(&tenant, query, &request.params)
            .map_err(|error| match error {
                AuditError::Query(error) => error,
                other => unavailable(other),
            })?;
        Ok::<_, WireError>(json!({"position": replayed.position, "answer": answer}))
    }
    .await;
    match answer {
        Ok(value) => serde_json::to_vec(&value),
        Err(error) => serde_json::to_vec(&QueryError { ok: false, error }),
    }
    .expect("answers serialise")
}

fn unavailable(error: AuditError) -> WireError {
    WireError::new(
        WireErrorCode::Unavailable,
        format!("the region's history could not be read: {error}"),
    )
}

/// The answer to one `who-could-use` request, or the error as a failed query's body (`refused`
/// when the node may no longer answer).
fn answer_who_could_use(log: &EventLog, payload: &[u8], refused: Option<WireError>) -> Vec<u8> {
    let request = match refused {
        Some(refusal) => Err(refusal),
        None => who_could_use_request(payload),
    };
    let answer = request.and_then(|(image, until)| {
        who_could_use_offline(log, image, until).map_err(|error| {
            WireError::new(
                WireErrorCode::Unavailable,
                format!("reading the log failed: {error}"),
            )
        })
    });
    match answer {
        Ok(value) => serde_json::to_vec(&value),
        Err(error) => serde_json::to_vec(&QueryError { ok: false, error }),
    }
    .expect("answers serialise")
}

fn who_could_use_request(payload: &[u8]) -> Result<(ImageId, Until), WireError> {
    let invalid = |message: String| WireError::new(WireErrorCode::InvalidArgument, message);
    let request: WhoCouldUseRequest = serde_json::from_slice(payload).map_err(|e| {
        invalid(format!(
            "who-could-use expects {{\"image_id\", \"position\" or \"at_ms\"}}: {e}"
        ))
    })?;
    let image = ImageId::parse(&request.image_id).map_err(WireError::from)?;
    Ok((
        image,
        until_of("who-could-use", request.position, request.at_ms)?,
    ))
}

/// The moment a request names by a position or a time (neither: now).
fn until_of(what: &str, position: Option<u64>, at_ms: Option<u64>) -> Result<Until, WireError> {
    match (position, at_ms) {
        (Some(position), None) => Ok(Until::Position(position)),
        (None, Some(at_ms)) => Ok(Until::Time(at_ms)),
        (None, None) => Ok(Until::Position(u64::MAX)),
        (Some(_), Some(_)) => Err(WireError::new(
            WireErrorCode::InvalidArgument,
            format!("{what} takes a position or a time (at_ms), not both"),
        )),
    }
}

/// A moment as a request's `position` and `at_ms`.
fn until_fields(until: Until) -> (Option<u64>, Option<u64>) {
    match until {
        Until::Position(position) => (Some(position), None),
        Until::Time(at_ms) => (None, Some(at_ms)),
    }
}

/// Asks a running service who could use `image` as of `until`.
pub async fn who_could_use_online(
    client: &async_nats::Client,
    subjects: &Subjects,
    region: &RegionId,
    image: ImageId,
    until: Until,
) -> Result<Value, AuditError> {
    let (position, at_ms) = until_fields(until);
    let request = WhoCouldUseRequest {
        image_id: image.to_string(),
        position,
        at_ms,
    };
    ask(client, subjects.audit(region, "who-could-use"), &request).await
}

/// Asks a running service what `query` answered `tenant` as of `until`: its answer and the
/// position it is as of.
pub async fn as_of_online(
    client: &async_nats::Client,
    subjects: &Subjects,
    region: &RegionId,
    tenant: &TenantId,
    query: Query,
    params: QueryParams,
    until: Until,
) -> Result<(u64, Value), AuditError> {
    let (position, at_ms) = until_fields(until);
    let request = AsOfRequest {
        tenant: tenant.to_string(),
        query: <&str>::from(query).to_owned(),
        params,
        position,
        at_ms,
    };
    let mut answer = ask(client, subjects.audit(region, "as-of"), &request).await?;
    let position = answer["position"]
        .as_u64()
        .ok_or_else(|| AuditError::Answered(format!("as-of answered no position: {answer}")))?;
    Ok((position, answer["answer"].take()))
}

/// Sends an audit request and reads its answer, refused ones as errors.
async fn ask(
    client: &async_nats::Client,
    subject: String,
    request: &impl serde::Serialize,
) -> Result<Value, AuditError> {
    let message = tokio::time::timeout(
        ANSWER_TIMEOUT,
        client.request(subject.clone(), Bytes::from(serde_json::to_vec(request)?)),
    )
    .await
    .map_err(|_| {
        AuditError::Answered(format!(
            "{subject} did not answer within {ANSWER_TIMEOUT:?}"
        ))
    })?
    .map_err(|error| AuditError::Nats {
        subject: subject.clone(),
        error: error.into(),
    })?;
    let answer: Value = serde_json::from_slice(&message.payload)?;
    if answer["ok"] == false {
        return Err(AuditError::Answered(format!(
            "{subject} answered {}",
            answer["error"]
        )));
    }
    Ok(answer)
}
