//! The single writer of a region: drains queued commands in bounded batches, decides each against
//! the current state (earlier decisions of the batch included), appends the whole batch to the
//! log as one durable write, then answers every command and hands the events to the publisher.
//!
//! The writer holds only the entities that recent commands touched: before deciding, it loads
//! the images a command names by folding their streams (a handful of events each, found through
//! the log's stream index), and the tenants from the snapshots the log keeps with each append (a
//! tenant's count of owned images comes from other streams' events, so its stream is not enough).
//! That keeps start-up instant and memory bounded however long the log is.

use std::collections::{BTreeSet, HashMap};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ims_domain::{
    decide, evolve, Command, Context, Event, ImageId, OperatorCommand, RegionId, SharingPolicy,
    State, StreamId, TenantCommand, TenantId,
};
use ims_log::{
    AppendTimings, Appended, Envelope, EventLog, LogError, NewCommand, NewEvent, Replicate,
};
use ims_wire::{CommandReply, ParsedCommand, WireError, WireErrorCode};
use tokio::sync::mpsc;

mod entities;
mod handle;
mod reply;

pub use handle::{CommandRequest, NotQueued, WriterHandle};

use reply::Outbox;
pub use reply::{NatsReply, PendingRequest, ReplyTo, Responder};

/// Commands decided and written together. Bounded so that one batch's latency stays low and its
/// memory small; 256 is where group commit stops paying off on this hardware (see the log bench).
pub const BATCH_COMMANDS_MAX: usize = 256;

/// Commands waiting for the writer. Bounded so that memory stays flat under a flood: a NATS
/// command that finds the queue full is answered "overloaded; retry" at once, and an in-process
/// caller ([`WriterHandle::execute`]) waits for room.
pub const QUEUE_COMMANDS_MAX: usize = 4096;

/// Entities the writer keeps loaded; past this it forgets them all and reloads on demand.
pub const CACHE_ENTITIES_MAX: usize = 200_000;

/// A command of the batch, decided but not yet durable.
struct Decided {
    request: CommandRequest,
    outcome: Outcome,
}

enum Outcome {
    /// Refused: the reply is final once the batch is written.
    Refused(CommandReply),
    /// Nothing to record (for example, sharing with tenants that are members already).
    NoChange(CommandReply),
    /// Index into the log batch; the reply gets its position once written.
    Append(usize, CommandReply),
    /// A repeat of an earlier command id: the stored reply.
    Replayed(CommandReply),
    /// A repeat of a command id earlier in this batch: the same reply as that one.
    FollowerOf(usize),
}

/// The writer of one region. Runs on its own thread, since appends block on fsync.
pub struct RegionWriter {
    region: RegionId,
    log: EventLog,
    state: State,
    policy: SharingPolicy,
    published: mpsc::Sender<Vec<Envelope>>,
    /// With replication: where each group goes before the local log (DESIGN.md section 12).
    replicate: Option<Replicate>,
}

impl std::fmt::Debug for RegionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionWriter")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Why a writer stopped on its own: its log could not be written. The process must stop (fail-
/// stop): what the log holds is no longer known until it is reopened and checked. With
/// replication, a group the stream did not take ([`WriterFailed::stepped_down`]) is the
/// exception: nothing was written here, and the node goes on as a follower.
#[derive(Debug, thiserror::Error)]
#[error("the event log of region {region} could not be written ({cause}); stopping, since the outcome of the batch in hand is unknown until the log is reopened and checked")]
pub struct WriterFailed {
    pub region: RegionId,
    pub cause: LogError,
}

impl WriterFailed {
    /// Whether the writer stopped because the replicated log did not take a group (fenced by
    /// another writer, or the outcome unknown): the local log is untouched and the node must
    /// catch up from the stream before it may write again.
    pub fn stepped_down(&self) -> bool {
        matches!(self.cause, LogError::NotReplicated { .. })
    }
}

/// Starts the writer thread of `region`; durable events go to `published` in position order.
/// The thread ends, after finishing the batch in hand, once every handle is dropped (`Ok`), or
/// at the first failed write (`Err`: see [`WriterFailed`]).
pub fn spawn_writer(
    region: RegionId,
    log: EventLog,
    policy: SharingPolicy,
    published: mpsc::Sender<Vec<Envelope>>,
) -> (
    WriterHandle,
    std::thread::JoinHandle<Result<(), WriterFailed>>,
) {
    spawn_replicated_writer(region, log, policy, published, None)
}

/// [`spawn_writer`] for a replicated region: each group goes through `replicate` (the stream's
/// replicated ack is the commit point) before the local log.
pub fn spawn_replicated_writer(
    region: RegionId,
    log: EventLog,
    policy: SharingPolicy,
    published: mpsc::Sender<Vec<Envelope>>,
    replicate: Option<Replicate>,
) -> (
    WriterHandle,
    std::thread::JoinHandle<Result<(), WriterFailed>>,
) {
    let (sender, receiver) = mpsc::channel(QUEUE_COMMANDS_MAX);
    let writer = RegionWriter {
        region: region.clone(),
        log,
        state: State::default(),
        policy,
        published,
        replicate,
    };
    let thread = std::thread::Builder::new()
        .name(format!("writer-{region}"))
        .spawn(move || writer.run(receiver))
        .expect("spawning the writer thread");
    (WriterHandle { sender }, thread)
}

/// Records how long a stage of the writer took: `queue_wait`, `decide` and `woken` (the reply
/// sent to the caller's task running again) per command; `seal`, `apply`, `flush`, `fsync`,
/// `reply` and the whole `batch` per batch (every command of it waits for them), and `index`,
/// the command index written after the batch's replies.
fn stage(name: &'static str, took: std::time::Duration) {
    metrics::histogram!("ims_writer_stage_seconds", "stage" => name).record(took.as_secs_f64());
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn error_reply(code: WireErrorCode, message: impl Into<String>) -> CommandReply {
    CommandReply::error(WireError::new(code, message))
}

impl RegionWriter {
    fn run(mut self, mut receiver: mpsc::Receiver<CommandRequest>) -> Result<(), WriterFailed> {
        while let Some(first) = receiver.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < BATCH_COMMANDS_MAX {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            // On a failed write the queue is dropped with the writer: every command still in
            // it is answered `unavailable` by its sender, to be retried with its command id.
            self.write_batch(batch)?;
            self.index_commands(receiver.is_empty())?;
        }
        tracing::info!(region = %self.region, "writer stopped: every queued command was answered");
        Ok(())
    }

    /// The command index after the replies: the log already holds the records it is derived
    /// from, and a retry finds them in memory until the index has them. Written whenever the
    /// queue is `idle`, and under load once enough are pending (ims-log's `INDEX_DUE_COMMANDS`).
    fn index_commands(&self, idle: bool) -> Result<(), WriterFailed> {
        let indexing = Instant::now();
        let written = match idle {
            true => self.log.index_pending_commands(),
            false => self.log.index_commands_when_due(),
        };
        if let Err(error) = written {
            tracing::error!(region = %self.region, %error, "writing the command index failed; the writer stops and the process with it");
            return Err(WriterFailed {
                region: self.region.clone(),
                cause: error,
            });
        }
        stage("index", indexing.elapsed());
        Ok(())
    }

    fn write_batch(&mut self, batch: Vec<CommandRequest>) -> Result<(), WriterFailed> {
        let batch_started = Instant::now();
        metrics::histogram!("ims_writer_batch_commands").record(batch.len() as f64);
        let mut decided = Vec::with_capacity(batch.len());
        let mut to_append: Vec<NewCommand> = Vec::new();
        let mut first_with_id = HashMap::new();
        for request in batch {
            stage(
                "queue_wait",
                batch_started.duration_since(request.queued_at),
            );
            let started = Instant::now();
            let outcome =
                self.decide_one(&request, &mut to_append, &mut first_with_id, decided.len());
            stage("decide", started.elapsed());
            decided.push(Decided { request, outcome });
        }
        let started = Instant::now();
        let appended = if to_append.is_empty() {
            Ok((Vec::new(), AppendTimings::default()))
        } else {
            let replicate = self
                .replicate
                .as_mut()
                .map(|replicate| replicate.as_mut() as &mut _);
            self.log.append_replicated(&to_append, replicate)
        };
        metrics::histogram!("ims_append_seconds").record(started.elapsed().as_secs_f64());
        let results = match appended {
            Ok((results, timings)) => {
                stage("seal", timings.seal);
                stage("apply", timings.apply);
                stage("flush", timings.flush);
                stage("fsync", timings.fsync);
                results
            }
            Err(error) => return Err(self.fail(decided, error)),
        };
        let replying = Instant::now();
        let (replies, envelopes) = self.final_replies(&decided, &results);
        let mut outbox = Outbox::default();
        for (Decided { request, .. }, reply) in decided.into_iter().zip(replies) {
            let outcome = reply.error.as_ref().map_or("ok", |e| e.code.as_str());
            metrics::counter!("ims_commands_total", "outcome" => outcome).increment(1);
            outbox.send(request.reply, reply);
        }
        outbox.hand_over();
        // Replies first, then events (DESIGN.md section 3): the replies are what the callers
        // wait for, and on a shared connection they would queue behind the batch's events.
        if !envelopes.is_empty() && self.published.try_send(envelopes).is_err() {
            // Projectors notice the gap and read it from the log; nothing is lost.
            tracing::warn!(region = %self.region, "event publisher is behind; live events skipped");
        }
        stage("reply", replying.elapsed());
        stage("batch", batch_started.elapsed());
        if self.state.images.len() + self.state.tenants.len() > CACHE_ENTITIES_MAX {
            self.state = State::default();
        }
        Ok(())
    }

    /// Answers a batch whose append failed and returns why the writer stops. The batch may or
    /// may not have reached the disk: only a reopened, checked log can say, so nobody is told
    /// "nothing was recorded".
    fn fail(&self, decided: Vec<Decided>, error: LogError) -> WriterFailed {
        match &error {
            LogError::NotReplicated { .. } => {
                tracing::warn!(region = %self.region, %error, "the stream did not take a batch; the writer steps down")
            }
            _ => {
                tracing::error!(region = %self.region, %error, "appending a batch failed; the writer stops and the process with it")
            }
        }
        let mut outbox = Outbox::default();
        for Decided { request, .. } in decided {
            metrics::counter!("ims_commands_total", "outcome" => "unavailable").increment(1);
            let reply = error_reply(
                WireErrorCode::Unavailable,
                format!(
                    "the event log could not be written ({error}); the outcome is unknown: retry \
                     with the same command_id"
                ),
            );
            outbox.send(request.reply, reply);
        }
        outbox.hand_over();
        WriterFailed {
            region: self.region.clone(),
            cause: error,
        }
    }

    /// The reply to each command of a written batch, and the events written, to publish.
    fn final_replies(
        &mut self,
        decided: &[Decided],
        results: &[Appended],
    ) -> (Vec<CommandReply>, Vec<Envelope>) {
        let mut replies: Vec<CommandReply> = Vec::with_capacity(decided.len());
        let mut envelopes = Vec::new();
        for Decided { outcome, .. } in decided {
            let reply = match outcome {
                Outcome::Refused(reply) | Outcome::NoChange(reply) | Outcome::Replayed(reply) => {
                    reply.clone()
                }
                Outcome::FollowerOf(index) => CommandReply {
                    replayed: true,
                    ..replies[*index].clone()
                },
                Outcome::Append(index, reply) => match &results[*index] {
                    Appended::New {
                        last_position,
                        envelopes: written,
                        ..
                    } => {
                        envelopes.extend(written.iter().cloned());
                        CommandReply {
                            position: Some(*last_position),
                            ..reply.clone()
                        }
                    }
                    Appended::Duplicate(stored) => stored_reply(stored),
                    Appended::Conflict {
                        stream,
                        expected_version,
                        actual_version,
                    } => {
                        // Only a bug can get here: this writer is the only one and its state
                        // follows the log. Reload everything so the next command sees the truth.
                        self.state = State::default();
                        error_reply(
                            WireErrorCode::Conflict,
                            format!(
                                "stream {stream} is at version {actual_version}, not \
                                 {expected_version}; retry"
                            ),
                        )
                    }
                },
            };
            replies.push(reply);
        }
        (replies, envelopes)
    }

    /// What a command id already says about `request`: a follower of an earlier command of this
    /// batch, the stored reply of a recorded one, or a refusal for an id reused with another
    /// command. `None` when the command must be decided.
    fn by_command_id(
        &self,
        request: &CommandRequest,
        first_with_id: &mut HashMap<(String, uuid::Uuid), (usize, [u8; 32])>,
        index: usize,
    ) -> Option<Outcome> {
        let meta = &request.parsed.meta;
        let id = meta.command_id?;
        let actor = request.actor.to_string();
        if let Some((first, digest)) = first_with_id.get(&(actor.clone(), id)) {
            if *digest != meta.digest {
                return Some(Outcome::Refused(reused_id_reply(&id)));
            }
            return Some(Outcome::FollowerOf(*first));
        }
        first_with_id.insert((actor.clone(), id), (index, meta.digest));
        match self.log.command(&actor, &id) {
            Ok(Some(stored)) if stored.digest.is_some_and(|d| d != meta.digest) => {
                Some(Outcome::Refused(reused_id_reply(&id)))
            }
            Ok(Some(stored)) => Some(Outcome::Replayed(stored_reply(&stored))),
            Ok(None) => None,
            Err(error) => Some(Outcome::Refused(error_reply(
                WireErrorCode::Unavailable,
                format!("reading the command index failed: {error}"),
            ))),
        }
    }

    fn decide_one(
        &mut self,
        request: &CommandRequest,
        to_append: &mut Vec<NewCommand>,
        first_with_id: &mut HashMap<(String, uuid::Uuid), (usize, [u8; 32])>,
        index: usize,
    ) -> Outcome {
        if let Some(outcome) = self.by_command_id(request, first_with_id, index) {
            return outcome;
        }
        let ParsedCommand { meta, command } = &request.parsed;
        if let Err(error) = self.load_entities(command, &request.actor) {
            return Outcome::Refused(error_reply(
                WireErrorCode::Internal,
                format!("loading state failed: {error}"),
            ));
        }
        let context = Context {
            actor: request.actor.clone(),
            region: self.region.clone(),
            now_ms: now_ms(),
            new_image_id: ImageId::from_bytes(*uuid::Uuid::now_v7().as_bytes()),
            expected_version: meta.expected_version,
            policy: &self.policy,
        };
        let events = match decide(&self.state, command, &context) {
            Ok(events) => events,
            Err(error) => return Outcome::Refused(CommandReply::error(error.into())),
        };
        let mut reply = self.success_reply(command, &events, &context);
        let recorded_at_ms = context.now_ms;
        if events.is_empty() {
            // Nothing to record, but the answer reflects the commands before it in this batch:
            // their last position is what a read-your-writes query must wait for.
            let queued: usize = to_append.iter().map(|c| c.events.len()).sum();
            reply.position = Some(self.log.head_position() + queued as u64);
            return Outcome::NoChange(reply);
        }
        let (new_events, dirty) = self.evolve_with(&events);
        // The version of the entity the command changed (the first event's stream), after it.
        reply.version = events.first().map(|event| self.version_of(&event.stream()));
        to_append.push(NewCommand {
            command_id: meta.command_id,
            digest: Some(meta.digest),
            actor: request.actor.to_string(),
            recorded_at_ms,
            events: new_events,
            // Only a command with an id can be replayed, so only then is its reply worth storing.
            reply: if meta.command_id.is_some() {
                reply.to_json()
            } else {
                Vec::new()
            },
            snapshots: dirty
                .iter()
                .filter_map(|tenant| self.tenant_snapshot(tenant))
                .collect(),
        });
        Outcome::Append(to_append.len() - 1, reply)
    }

    /// Applies decided `events` to the writer's state; returns them ready for the log, and the
    /// tenants whose snapshot changes: their own events, and their images' creation and
    /// deletion (the count of owned images).
    fn evolve_with(&mut self, events: &[Event]) -> (Vec<NewEvent>, BTreeSet<TenantId>) {
        let mut new_events = Vec::with_capacity(events.len());
        let mut dirty: BTreeSet<TenantId> = BTreeSet::new();
        for event in events {
            evolve(&mut self.state, event);
            let stream = event.stream();
            new_events.push(ims_log::new_event(event, self.version_of(&stream)));
            if let StreamId::Tenant(tenant) = stream {
                dirty.insert(tenant);
            }
            if matches!(event, Event::ImageCreated(_) | Event::ImageDeleted { .. }) {
                if let Some(owner) = event
                    .image_id()
                    .and_then(|id| self.state.images.get(&id))
                    .and_then(|i| i.owner.tenant())
                {
                    dirty.insert(owner.clone());
                }
            }
        }
        (new_events, dirty)
    }

    fn success_reply(
        &self,
        command: &Command,
        events: &[Event],
        context: &Context,
    ) -> CommandReply {
        let mut reply = CommandReply {
            ok: true,
            ..CommandReply::default()
        };
        let image_id = events
            .iter()
            .find_map(Event::image_id)
            .or_else(|| command.touches().images.first().copied());
        reply.image_id = image_id.map(|id| id.to_string());
        match command {
            Command::Operator(
                OperatorCommand::RegisterTenant { tenant, .. }
                | OperatorCommand::SetQuota { tenant, .. }
                | OperatorCommand::RecordUsage { tenant, .. },
            ) => {
                reply.tenant = Some(tenant.to_string());
            }
            Command::Tenant(TenantCommand::ShareImage { tenants, .. }) => {
                let added: Vec<&TenantId> = events
                    .iter()
                    .flat_map(|e| match e {
                        Event::ImageShared { tenants, .. } => tenants.iter().collect(),
                        _ => Vec::new(),
                    })
                    .collect();
                let mut already: Vec<String> = tenants
                    .iter()
                    .filter(|t| !added.contains(t))
                    .map(|t| t.to_string())
                    .collect();
                already.dedup();
                reply.already_members = already;
            }
            Command::Tenant(TenantCommand::UnshareImage {
                tenants: Some(tenants),
                ..
            }) => {
                let ended: Vec<&TenantId> = events
                    .iter()
                    .flat_map(|e| match e {
                        Event::ImageUnshared { tenants, .. } => tenants.iter().collect(),
                        _ => Vec::new(),
                    })
                    .collect();
                reply.not_members = tenants
                    .iter()
                    .filter(|t| !ended.contains(t))
                    .map(|t| t.to_string())
                    .collect();
            }
            Command::Tenant(TenantCommand::CopyImage { .. }) => {
                reply.copy_image_id = Some(context.new_image_id.to_string())
            }
            _ => {}
        }
        if let Some(id) = image_id {
            reply.version = self.state.images.get(&id).map(|image| image.version);
        }
        reply
    }
}

/// The refusal of a command id that its sender already used for another command.
fn reused_id_reply(id: &uuid::Uuid) -> CommandReply {
    error_reply(
        WireErrorCode::Conflict,
        format!(
            "command_id {id} was already used by you for a different command; a retry must \
             repeat the same command, and a new command needs a new command_id"
        ),
    )
}

fn stored_reply(stored: &ims_log::StoredCommand) -> CommandReply {
    let mut reply: CommandReply =
        serde_json::from_slice(&stored.reply).unwrap_or_else(|_| CommandReply {
            ok: true,
            ..CommandReply::default()
        });
    reply.position = Some(stored.last_position);
    reply.replayed = true;
    reply
}
