//! The replicated log of a region: the JetStream stream `IMS_LOG_<region>`, one message per
//! committed append group (several when the group is larger than a message may be).
//!
//! Messages carry `Nats-Msg-Id` `<region>:<first position>` (split groups: `<region>:<first
//! position>:<part>/<parts>@<sequence before the group>`, unique even when a leader died between
//! the parts of a group and the next one starts at the same position) and the header
//! `Ims-Part: <part>/<parts>`. A retry after a lost ack is deduplicated by the stream; since
//! another writer's group at the same position would be deduplicated too, a duplicate ack
//! counts only when the stored message is ours.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use bytes::Bytes;
use futures::StreamExt;
use ims_domain::RegionId;
use ims_log::{EventLog, GroupRecord, LogError};
use ims_wire::Subjects;

use crate::ReplicationError;

/// Which part of its group a message is.
const PART_HEADER: &str = "Ims-Part";

/// Room left in a message for its headers.
const HEADERS_ROOM: usize = 4096;

/// How long one publish waits for the stream's replicated ack.
const ACK_WAIT: Duration = Duration::from_secs(2);

/// Attempts of one publish before the writer steps down, the outcome unknown.
const PUBLISH_ATTEMPTS: usize = 3;

/// At most this many groups go into one append of a catching-up follower (one batch, one
/// fdatasync), and at most about this many bytes.
const CATCH_UP_GROUPS_MAX: usize = 256;
const CATCH_UP_BYTES_MAX: usize = 8 << 20;

/// How long a follower waits for the next message of a stream that is ahead of it before it
/// opens a new consumer (the one it had may have lived on a server that died).
const STALL_AFTER: Duration = Duration::from_secs(2);

/// The stream of `region`'s committed append groups.
pub fn stream_name(region: &RegionId) -> String {
    format!("IMS_LOG_{region}")
}

/// A region's replicated log on JetStream.
#[derive(Clone, Debug)]
pub struct ReplicatedLog {
    js: jetstream::Context,
    region: RegionId,
    stream: String,
    subject: String,
    part_max: usize,
}

impl ReplicatedLog {
    /// The replicated log of `region`, creating its stream (`replicas` copies, file storage) when
    /// it does not exist.
    pub async fn open(
        client: &async_nats::Client,
        subjects: &Subjects,
        region: &RegionId,
        replicas: usize,
    ) -> Result<Self, ReplicationError> {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(ACK_WAIT);
        let name = stream_name(region);
        let subject = subjects.log_groups(region);
        js.get_or_create_stream(stream::Config {
            name: name.clone(),
            description: Some(format!(
                "ims: the committed append groups of region {region} (DESIGN.md section 12)"
            )),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|e| ReplicationError::nats(format!("opening the stream {name}"), e))?;
        let part_max = (client.server_info().max_payload)
            .saturating_sub(HEADERS_ROOM)
            .max(HEADERS_ROOM);
        Ok(Self {
            js,
            region: region.clone(),
            stream: name,
            subject,
            part_max,
        })
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The sequence of the stream's last message (0 when empty).
    pub async fn last_sequence(&self) -> Result<u64, ReplicationError> {
        // One request: the handle comes with the stream's state.
        let stream = self.js.get_stream(&self.stream).await.map_err(|e| {
            ReplicationError::nats(format!("reading the state of stream {}", self.stream), e)
        })?;
        Ok(stream.cached_info().state.last_sequence)
    }

    /// Publishes `record`, expecting the stream to end at `expected_last`, and returns the
    /// sequence of its last message once the stream has acked every part. Errors are
    /// [`LogError::NotReplicated`]: `fenced` when another writer appended since.
    pub async fn publish(&self, record: &GroupRecord, expected_last: u64) -> Result<u64, LogError> {
        let bytes = record.encode();
        let parts: Vec<&[u8]> = bytes.chunks(self.part_max).collect();
        let count = parts.len();
        let mut last = expected_last;
        for (index, part) in parts.into_iter().enumerate() {
            let id = match count {
                1 => format!("{}:{}", self.region, record.first_position()),
                _ => format!(
                    "{}:{}:{}/{count}@{expected_last}",
                    self.region,
                    record.first_position(),
                    index + 1
                ),
            };
            let message = jetstream::message::PublishMessage::build()
                .payload(Bytes::copy_from_slice(part))
                .message_id(&id)
                .expected_last_sequence(last)
                .header(PART_HEADER, format!("{}/{count}", index + 1).as_str());
            last = self.publish_part(message, &id, part).await?;
        }
        metrics::gauge!("ims_replication_position", "region" => self.region.to_string())
            .set(record.last_position() as f64);
        Ok(last)
    }

    async fn publish_part(
        &self,
        message: jetstream::message::PublishMessage,
        id: &str,
        payload: &[u8],
    ) -> Result<u64, LogError> {
        let mut failure = String::new();
        for _ in 0..PUBLISH_ATTEMPTS {
            let acked = match self
                .js
                .send_publish(self.subject.clone(), message.clone())
                .await
            {
                Ok(ack) => ack.await,
                Err(error) => Err(error),
            };
            match acked {
                Ok(ack) if !ack.duplicate => return Ok(ack.sequence),
                // Deduplicated: ours from an attempt whose ack was lost, or another writer's.
                Ok(ack) => return self.check_ours(ack.sequence, id, payload).await,
                Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                    metrics::counter!("ims_replication_fenced_total").increment(1);
                    return Err(not_replicated(true, format!("message {id}: {error}")));
                }
                Err(error) => failure = format!("message {id}: {error}"),
            }
        }
        Err(not_replicated(false, failure))
    }

    async fn check_ours(&self, sequence: u64, id: &str, payload: &[u8]) -> Result<u64, LogError> {
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| not_replicated(false, format!("checking message {id}: {e}")))?;
        let stored = stream
            .get_raw_message(sequence)
            .await
            .map_err(|e| not_replicated(false, format!("checking message {id}: {e}")))?;
        if stored.payload.as_ref() == payload {
            return Ok(sequence);
        }
        metrics::counter!("ims_replication_fenced_total").increment(1);
        Err(not_replicated(
            true,
            format!("message {id} was stored by another writer at sequence {sequence}"),
        ))
    }

    /// Appends to `log` the groups the stream holds past the log's replicated sequence: up to
    /// sequence `until` (catch-up; returns once there), or for as long as `stop` is pending
    /// (a standby following the leader). Returns the sequence the log holds.
    pub async fn follow(
        &self,
        log: &EventLog,
        until: Option<u64>,
        stop: impl Future<Output = ()>,
    ) -> Result<u64, ReplicationError> {
        let mut held = log.replicated_sequence()?;
        if until.is_some_and(|until| until <= held) {
            return Ok(held);
        }
        self.check_start(log, held)?;
        let doing = || format!("following stream {}", self.stream);
        let mut messages = self.messages_after(held).await?;
        let mut group = Vec::new();
        let (mut ready, mut ready_bytes, mut ready_until) = (Vec::new(), 0, held);
        // The last sequence received (parts included), and what it was at the last stall check.
        let (mut received, mut checked) = (held, held);
        let mut stall_checks = tokio::time::interval(STALL_AFTER);
        stall_checks.tick().await;
        tokio::pin!(stop);
        loop {
            let message = tokio::select! {
                _ = &mut stop => return Ok(held),
                message = messages.next() => message,
                _ = stall_checks.tick() => {
                    if received == checked && self.last_sequence().await? > received {
                        return Err(ReplicationError::nats(
                            doing(),
                            format!("no message past sequence {received} for {STALL_AFTER:?} while the stream is ahead"),
                        ));
                    }
                    checked = received;
                    continue;
                }
            };
            let message = message
                .ok_or_else(|| ReplicationError::Diverged(format!("{} ended", doing())))?
                .map_err(|e| ReplicationError::nats(doing(), e))?;
            let info = message
                .info()
                .map_err(|e| ReplicationError::nats(doing(), e))?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            received = sequence;
            let (part, parts) = part_of(&message);
            if part == 1 {
                // A group's first part; whatever came before it was a group whose leader died
                // between its parts, never acknowledged.
                group.clear();
            }
            group.extend_from_slice(&message.payload);
            if part == parts {
                ready_bytes += group.len();
                ready.push(GroupRecord::decode(&group)?);
                ready_until = sequence;
                group.clear();
            }
            let done = until.is_some_and(|until| sequence >= until);
            // While more is pending, groups gather into one append: one fdatasync for many.
            let gathered = ready.len() >= CATCH_UP_GROUPS_MAX || ready_bytes >= CATCH_UP_BYTES_MAX;
            if !ready.is_empty() && (pending == 0 || gathered || done) {
                // Up to the last whole group, not a part of the next one.
                held = self
                    .append(log, std::mem::take(&mut ready), ready_until)
                    .await?;
                ready_bytes = 0;
                let region = self.region.to_string();
                metrics::gauge!("ims_replication_lag_messages", "region" => region)
                    .set(pending as f64);
            }
            if done {
                return Ok(held);
            }
        }
    }

    /// The stream's messages after sequence `held`, through an ordered consumer of our own.
    async fn messages_after(&self, held: u64) -> Result<consumer::pull::Ordered, ReplicationError> {
        let doing = || format!("following stream {}", self.stream);
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| ReplicationError::nats(doing(), e))?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: held + 1,
                },
                filter_subject: self.subject.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| ReplicationError::nats(doing(), e))?;
        consumer
            .messages()
            .await
            .map_err(|e| ReplicationError::nats(doing(), e))
    }

    /// Appends `records`, the last one ending at stream sequence `sequence`, on a blocking
    /// thread (it fdatasyncs); returns the sequence the log then holds.
    async fn append(
        &self,
        log: &EventLog,
        records: Vec<GroupRecord>,
        sequence: u64,
    ) -> Result<u64, ReplicationError> {
        let appending = log.clone();
        tokio::task::spawn_blocking(move || appending.append_groups(&records, sequence))
            .await
            .map_err(|e| ReplicationError::Diverged(format!("appending groups: {e}")))??;
        metrics::gauge!("ims_replication_position", "region" => self.region.to_string())
            .set(log.head_position() as f64);
        Ok(sequence)
    }

    /// Appends every group the stream holds now: what a node does before it serves commands.
    pub async fn catch_up(&self, log: &EventLog) -> Result<u64, ReplicationError> {
        let last = self.last_sequence().await?;
        let held = log.replicated_sequence()?;
        self.check_start(log, held)?;
        if held > last {
            return Err(ReplicationError::Diverged(format!(
                "the log of region {} holds groups up to sequence {held} of stream {}, which \
                 ends at {last}: the stream lost acknowledged groups or was recreated",
                self.region, self.stream
            )));
        }
        self.follow(log, Some(last), std::future::pending()).await?;
        // Past a group whose leader died between its parts, the stream ends later than the log.
        Ok(last)
    }

    /// Refuses to follow a stream into a log that has events the stream did not give it: a log
    /// written before replication was turned on.
    fn check_start(&self, log: &EventLog, held: u64) -> Result<(), ReplicationError> {
        if held == 0 && log.head_position() > 0 {
            return Err(ReplicationError::Diverged(format!(
                "the log of region {} holds {} events that stream {} did not give it (written \
                 before replication was turned on); replication starts from an empty log",
                self.region,
                log.head_position(),
                self.stream
            )));
        }
        Ok(())
    }
}

/// `Ims-Part: <part>/<parts>` of a message (1/1 when absent).
fn part_of(message: &jetstream::Message) -> (usize, usize) {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(PART_HEADER))
        .and_then(|value| {
            let (part, parts) = value.as_str().split_once('/')?;
            Some((part.parse().ok()?, parts.parse().ok()?))
        })
        .unwrap_or((1, 1))
}

fn not_replicated(fenced: bool, reason: String) -> LogError {
    LogError::NotReplicated { fenced, reason }
}
