//! Audits answered by the process that holds a region's log: `ims.v1.<region>.audit.who-could-use`
//! reads the image's own stream and the tenants' registrations there, so an online auditor gets
//! in milliseconds what a replay of the whole region would take seconds to say.

use std::future::Future;

use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::StreamExt;
use ims_bus::{RoleError, SERVICE_VERSION};
use ims_domain::{ImageId, RegionId};
use ims_log::EventLog;
use ims_wire::queries::WhoCouldUseRequest;
use ims_wire::views::QueryError;
use ims_wire::{Subjects, WireError, WireErrorCode};
use serde_json::Value;

use crate::replay::{who_could_use_offline, Until};
use crate::AuditError;

/// How long an auditor waits for the answer.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves the audit endpoints of `region` from `log` until `stop` completes.
pub async fn serve_audits(
    client: async_nats::Client,
    subjects: Subjects,
    region: RegionId,
    log: EventLog,
    stop: impl Future<Output = ()>,
) -> Result<(), RoleError> {
    let service = client
        .service_builder()
        .description(format!(
            "ims audit service of region {region}: who could use an image, from its stream"
        ))
        .start("ims-audit", SERVICE_VERSION)
        .await
        .map_err(|e| RoleError::nats("registering the ims-audit service", e))?;
    let mut who_could_use = service
        .endpoint_builder()
        .name("who-could-use")
        .add(subjects.audit(&region, "who-could-use"))
        .await
        .map_err(|e| RoleError::nats("adding the who-could-use endpoint", e))?;
    tokio::pin!(stop);
    loop {
        let request = tokio::select! {
            _ = &mut stop => break,
            Some(request) = who_could_use.next() => request,
            else => break,
        };
        let answer = answer_who_could_use(&log, &request.message.payload);
        if let Err(error) = request.respond(Ok(Bytes::from(answer))).await {
            tracing::debug!(%error, "answering who-could-use failed");
        }
    }
    service
        .stop()
        .await
        .map_err(|e| RoleError::nats("stopping the ims-audit service", e))
}

/// The answer to one `who-could-use` request, or the error as a failed query's body.
fn answer_who_could_use(log: &EventLog, payload: &[u8]) -> Vec<u8> {
    let answer = who_could_use_request(payload).and_then(|(image, until)| {
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
    let until = match (request.position, request.at_ms) {
        (Some(position), None) => Until::Position(position),
        (None, Some(at_ms)) => Until::Time(at_ms),
        (None, None) => Until::Position(u64::MAX),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "who-could-use takes a position or a time (at_ms), not both".to_owned(),
            ))
        }
    };
    Ok((image, until))
}

/// Asks a running service who could use `image` as of `until`.
pub async fn who_could_use_online(
    client: &async_nats::Client,
    subjects: &Subjects,
    region: &RegionId,
    image: ImageId,
    until: Until,
) -> Result<Value, AuditError> {
    let request = WhoCouldUseRequest {
        image_id: image.to_string(),
        position: match until {
            Until::Position(position) => Some(position),
            Until::Time(_) => None,
        },
        at_ms: match until {
            Until::Time(at_ms) => Some(at_ms),
            Until::Position(_) => None,
        },
    };
    let subject = subjects.audit(region, "who-could-use");
    let message = tokio::time::timeout(
        ANSWER_TIMEOUT,
        client.request(subject.clone(), Bytes::from(serde_json::to_vec(&request)?)),
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
