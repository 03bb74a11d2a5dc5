//! The command side over NATS (DESIGN.md section 4): tenant commands on
//! `ims.v1.<region>.cmd.<tenant>.<command>`, operator commands on `ims.v1.<region>.op.<command>`,
//! history on `ims.v1.<region>.log.read`, and durable events published on
//! `ims.v1.<region>.events`. Registered with the NATS micro-services API as `ims-command`.

use std::future::Future;
use std::time::Instant;

use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::StreamExt;
use ims_domain::{Actor, RegionId, TenantId};
use ims_log::{Envelope, EventLog};
use ims_wire::subjects::POSITION_HEADER;
use ims_wire::{parse_command, CommandReply, ParsedCommand, Subjects, WireError, WireErrorCode};
use tokio::sync::mpsc;

use ims_bus::{
    overloaded, read_log, refuse, reply_bytes, reply_bytes_max, respond_log_read, stop_taking,
    LeaseDeadline, RoleError, COMMAND_PAYLOAD_BYTES_MAX, SERVICE_VERSION,
};

use crate::writer::{NatsReply, NotQueued, Responder, WriterHandle};

/// Batches of durable events waiting to be published.
pub const PUBLISH_QUEUE_MAX: usize = 1024;

/// Works out who sends a message on a command subject and which command it is.
fn actor_and_command(subject: &str, operator: bool) -> Result<(Actor, String), WireError> {
    let (tenant_token, name) = Subjects::tail_tokens(subject).ok_or_else(|| {
        WireError::new(
            WireErrorCode::InvalidArgument,
            format!("subject {subject:?} has too few tokens"),
        )
    })?;
    if operator {
        return Ok((Actor::Operator, name.to_owned()));
    }
    let tenant = TenantId::parse(tenant_token).map_err(|e| {
        WireError::new(
            WireErrorCode::InvalidArgument,
            format!("subject tenant token: {}", e.message),
        )
    })?;
    Ok((Actor::Tenant(tenant), name.to_owned()))
}

/// Reads one command message: checks size, subject and JSON here (the rules are the writer's).
fn read_command(
    subject: &str,
    payload: &[u8],
    operator: bool,
) -> Result<(Actor, ParsedCommand), WireError> {
    if payload.len() > COMMAND_PAYLOAD_BYTES_MAX {
        return Err(WireError::new(
            WireErrorCode::PayloadTooLarge,
            format!(
                "the payload is {} bytes; commands are at most {COMMAND_PAYLOAD_BYTES_MAX} bytes",
                payload.len()
            ),
        ));
    }
    let (actor, name) = actor_and_command(subject, operator)?;
    let started = Instant::now();
    let parsed = parse_command(&name, payload);
    endpoint_stage("parse", started.elapsed());
    Ok((actor, parsed?))
}

/// Queues a command request for the writer, or answers it at once when it is not a command or
/// the writer cannot take it: its queue full (a flood costs a reply each, memory stays flat) or
/// the writer stopping.
async fn take_command(
    writer: &WriterHandle,
    responder: &Responder,
    request: async_nats::service::Request,
    operator: bool,
) {
    let received = Instant::now();
    let message = &request.message;
    let (request, bytes) = match read_command(&message.subject, &message.payload, operator) {
        Ok((actor, parsed)) => {
            match writer.submit(actor, parsed, request.into(), responder, received) {
                Ok(()) => return,
                Err((request, NotQueued::Full)) => (request, overloaded("commands")),
                Err((request, NotQueued::Stopped)) => (
                    request,
                    reply_bytes(&refuse(
                        WireErrorCode::Unavailable,
                        "the region's writer is shutting down; retry",
                    )),
                ),
            }
        }
        Err(refusal) => (request.into(), reply_bytes(&CommandReply::error(refusal))),
    };
    if let Err(error) = request.respond(Ok(bytes)).await {
        tracing::debug!(%error, "answering a command failed");
    }
}

/// Responds to the command requests the writer answered, a batch at a time.
async fn respond_to_commands(mut batches: mpsc::UnboundedReceiver<Vec<NatsReply>>) {
    while let Some(batch) = batches.recv().await {
        for NatsReply {
            request,
            reply,
            received,
            sent_at,
        } in batch
        {
            metrics::histogram!("ims_writer_stage_seconds", "stage" => "woken")
                .record(sent_at.elapsed().as_secs_f64());
            let responding = Instant::now();
            if let Err(error) = request.respond(Ok(reply_bytes(&reply))).await {
                tracing::debug!(%error, "answering a command failed");
            }
            endpoint_stage("respond", responding.elapsed());
            endpoint_stage("in_service", received.elapsed());
        }
    }
}

/// Records how long a stage of a command's way through the endpoint took: `parse`, `respond`
/// (the reply sent back) and `in_service` (received to responded: everything but the NATS hops to
/// and from the client). The wait for the responder task is the writer's `woken` stage.
fn endpoint_stage(name: &'static str, took: std::time::Duration) {
    metrics::histogram!("ims_endpoint_stage_seconds", "stage" => name).record(took.as_secs_f64());
}

/// Publishes durable events in position order, one message each with the `Ims-Position` header.
pub async fn publish_events(
    client: async_nats::Client,
    subject: String,
    mut batches: mpsc::Receiver<Vec<Envelope>>,
) {
    // Made once: a `Subject` clones without allocating.
    let subject = async_nats::Subject::from(subject);
    while let Some(batch) = batches.recv().await {
        for envelope in batch {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(POSITION_HEADER, envelope.position().to_string().as_str());
            if let Err(error) = client
                .publish_with_headers(subject.clone(), headers, Bytes::from(envelope.encode()))
                .await
            {
                // Not fatal: projectors fill gaps from log.read.
                tracing::warn!(%error, position = envelope.position(), "publishing an event failed");
            }
        }
    }
}

/// Serves the command endpoints of `region` until `shutdown` completes, then stops taking
/// commands; those that reached this node before are still answered by the writer. With `lease` (a
/// replicated leader), nothing is answered from this node once it lapses.
pub async fn serve_commands(
    client: async_nats::Client,
    subjects: Subjects,
    region: RegionId,
    writer: WriterHandle,
    log: EventLog,
    lease: Option<LeaseDeadline>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RoleError> {
    let service = client
        .service_builder()
        .description(format!(
            "ims command service of region {region}: tenant and operator commands, log.read"
        ))
        .metadata(
            [("region".to_owned(), region.to_string())]
                .into_iter()
                .collect(),
        )
        .start("ims-command", SERVICE_VERSION)
        .await
        .map_err(|e| RoleError::nats("registering the ims-command service", e))?;
    let add = |name: &'static str, subject: String| {
        let builder = service.endpoint_builder().name(name);
        async move {
            builder
                .add(subject)
                .await
                .map_err(|e| RoleError::nats(format!("adding endpoint {name}"), e))
        }
    };
    let mut tenant_commands = add("tenant-commands", subjects.tenant_commands(&region)).await?;
    let mut operator_commands =
        add("operator-commands", subjects.operator_commands(&region)).await?;
    let mut log_read = add("log-read", subjects.log_read(&region)).await?;
    tracing::info!(%region, "command service ready");
    // The writer answers through this task; it ends once the writer has answered every command
    // queued here (or dropped them, answered "unavailable", when it failed), after the loop
    // below stops taking them.
    let (responder, batches) = mpsc::unbounded_channel();
    let responding = tokio::spawn(respond_to_commands(batches));
    tokio::pin!(shutdown);
    let mut stopping = false;
    loop {
        let (request, operator) = tokio::select! {
            _ = &mut shutdown, if !stopping => {
                // What reached this node before is still taken, and answered by the writer.
                stop_taking([&mut tenant_commands, &mut operator_commands, &mut log_read]).await;
                stopping = true;
                continue;
            }
            Some(request) = tenant_commands.next() => (request, false),
            Some(request) = operator_commands.next() => (request, true),
            Some(request) = log_read.next() => {
                let answer = match lease.as_ref().and_then(|lease| lease.refusal(&region)) {
                    Some(refusal) => Err(refusal),
                    None => read_log(&log, &request.message.payload, reply_bytes_max(&client)),
                };
                if let Err(error) = respond_log_read(request, answer).await {
                    tracing::debug!(%error, "answering log.read failed");
                }
                continue;
            }
            else => break,
        };
        if let Some(refusal) = lease.as_ref().and_then(|lease| lease.refusal(&region)) {
            let refused = reply_bytes(&CommandReply::error(refusal));
            if let Err(error) = request.respond(Ok(refused)).await {
                tracing::debug!(%error, "answering a command failed");
            }
            continue;
        }
        take_command(&writer, &responder, request, operator).await;
    }
    // Every command taken is answered before the process drains its NATS connection.
    drop(responder);
    if let Err(error) = responding.await {
        tracing::warn!(%error, "the command responder stopped");
    }
    service
        .stop()
        .await
        .map_err(|e| RoleError::nats("stopping the ims-command service", e))?;
    Ok(())
}
