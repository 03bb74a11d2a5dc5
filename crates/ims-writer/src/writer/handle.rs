//! How commands reach a region's writer: its bounded queue, awaited by in-process callers and
//! tried by the NATS endpoints.

use std::time::Instant;

use ims_domain::Actor;
use ims_wire::{CommandReply, ParsedCommand, WireError, WireErrorCode};
use tokio::sync::{mpsc, oneshot};

use super::{stage, PendingRequest, ReplyTo, Responder};

/// A command on its way to the writer, with where to send the reply.
#[derive(Debug)]
pub struct CommandRequest {
    pub actor: Actor,
    pub parsed: ParsedCommand,
    pub reply: ReplyTo,
    /// When it was queued: the wait for the writer is a stage of its latency.
    pub queued_at: Instant,
}

/// Why the writer did not take a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotQueued {
    /// Its queue is full: the caller answers "overloaded; retry".
    Full,
    /// It is shutting down.
    Stopped,
}

/// The handle that command endpoints use to reach a region's writer.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    pub(super) sender: mpsc::Sender<CommandRequest>,
}

impl WriterHandle {
    /// Queues a command and waits for its durable answer.
    pub async fn execute(&self, actor: Actor, parsed: ParsedCommand) -> CommandReply {
        let (reply, answer) = oneshot::channel();
        if self
            .sender
            .send(CommandRequest {
                actor,
                parsed,
                reply: ReplyTo::Caller(reply),
                queued_at: Instant::now(),
            })
            .await
            .is_err()
        {
            return CommandReply::error(WireError::new(
                WireErrorCode::Unavailable,
                "the region's writer is shutting down; retry",
            ));
        }
        match answer.await {
            Ok((reply, sent_at)) => {
                stage("woken", sent_at.elapsed());
                reply
            }
            Err(_) => CommandReply::error(WireError::new(
                WireErrorCode::Unavailable,
                "the region's writer stopped before answering; retry with the same command_id",
            )),
        }
    }

    /// Queues a command that came as NATS `request` without waiting: `responder` gets its reply
    /// with the rest of its batch. A command the writer cannot take is given back with why.
    pub fn submit(
        &self,
        actor: Actor,
        parsed: ParsedCommand,
        request: Box<async_nats::service::Request>,
        responder: &Responder,
        received: Instant,
    ) -> Result<(), (Box<async_nats::service::Request>, NotQueued)> {
        let command = CommandRequest {
            actor,
            parsed,
            reply: ReplyTo::Nats(PendingRequest::new(request, responder, received)),
            queued_at: Instant::now(),
        };
        let (command, why) = match self.sender.try_send(command) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(command)) => (command, NotQueued::Full),
            Err(mpsc::error::TrySendError::Closed(command)) => (command, NotQueued::Stopped),
        };
        match command.reply {
            ReplyTo::Nats(pending) => Err((pending.give_back(), why)),
            ReplyTo::Caller(_) => unreachable!("made a NATS request just above"),
        }
    }
}
