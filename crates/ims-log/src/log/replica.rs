//! The log's side of replication (DESIGN.md section 12): the record of an append group that a
//! leader replicates, and a follower's append of it.
//!
//! A follower writes exactly the keys the leader wrote for the group (events, stream index,
//! command records with their stored replies, the writer's snapshots, head), so that after a
//! failover a retried command is answered from the command index like on the old leader, and the
//! two logs hold the same events at the same positions with the same hashes.

use super::append::Group;
use super::*;

/// What a replicated writer hands each sealed group to: it makes the group durable elsewhere
/// and says under which stream sequence (see [`EventLog::append_replicated`]).
pub type Replicate = Box<ReplicateFn<'static>>;

/// The function behind [`Replicate`]: a sealed group in, its stream sequence out.
pub type ReplicateFn<'a> = dyn FnMut(&GroupRecord) -> Result<u64, LogError> + Send + 'a;

/// One committed append group as it is replicated: what a follower needs to write exactly what
/// the leader wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub envelopes: Vec<Envelope>,
    pub commands: Vec<CommandRecord>,
    /// The writer's snapshots (key without the log's prefix, value).
    pub snapshots: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The command-id index entry of one command of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub actor: String,
    pub command_id: [u8; 16],
    pub stored: StoredCommand,
}

impl GroupRecord {
    /// The position of its first event (0 for a group without events, which is never sent).
    pub fn first_position(&self) -> u64 {
        self.envelopes.first().map_or(0, Envelope::position)
    }

    pub fn last_position(&self) -> u64 {
        self.envelopes.last().map_or(0, Envelope::position)
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, LogError> {
        codec::decode(bytes, || "a replicated append group".to_owned())
    }
}

impl EventLog {
    /// The stream sequence of the last replicated group this log holds (0: none).
    pub fn replicated_sequence(&self) -> Result<u64, LogError> {
        Ok(self
            .shared
            .db
            .get(REPLICATED)?
            .filter(|bytes| bytes.len() == 8)
            .map_or(0, |bytes| be_u64(&bytes)))
    }

    /// Appends a group that the leader committed under stream sequence `sequence`, after checking
    /// that it continues this log: positions from the head on, each hash valid and chained to the
    /// one before. A group this log already holds (a redelivery) is skipped: `Ok(false)`.
    pub fn append_group(&self, record: &GroupRecord, sequence: u64) -> Result<bool, LogError> {
        self.append_groups(std::slice::from_ref(record), sequence)
            .map(|appended| appended > 0)
    }

    /// Appends several replicated groups in order, the last committed under stream sequence
    /// `sequence`, as one atomic batch with one flush and one fdatasync (a follower catching
    /// up), each checked as [`EventLog::append_group`] does and each stored as the record it was
    /// on the leader. Returns how many were appended (those the log holds already are skipped).
    pub fn append_groups(&self, records: &[GroupRecord], sequence: u64) -> Result<usize, LogError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
        }
        let mut head = self.shared.writer.lock().expect("log writer lock");
        self.index_pending_locked(commands::INDEX_DUE_COMMANDS)?;
        let mut group = Group::after(*head);
        let mut chain = ChainCheck::after(head.position, head.hash);
        for record in records
            .iter()
            .filter(|record| record.last_position() > head.position)
        {
            self.add_record(&mut group, &mut chain, record, sequence)?;
        }
        if group.record_sizes.is_empty() {
            return Ok(0);
        }
        let next = group.next;
        let mut timings = AppendTimings::default();
        if let Err(error) = self.write_group(&mut group, Some(sequence), &mut timings) {
            self.shared.poisoned.store(true, Ordering::Release);
            return Err(error);
        }
        *head = next;
        self.shared
            .durable_position
            .store(next.position, Ordering::Release);
        Ok(group.record_sizes.len())
    }

    /// Adds one replicated group to `group`, checking that it continues the chain.
    fn add_record(
        &self,
        group: &mut Group<'_>,
        chain: &mut ChainCheck,
        record: &GroupRecord,
        sequence: u64,
    ) -> Result<(), LogError> {
        for envelope in &record.envelopes {
            if let Err(broken) = chain.check(envelope, chain.expected()) {
                return Err(LogError::Broken {
                    position: broken.position,
                    problem: format!(
                        "the replicated group ending at stream sequence {sequence} does not \
                         continue this log: {}",
                        broken.problem
                    ),
                });
            }
            let version = envelope.body.stream_version;
            let opens_chunk = (version - 1) % STREAM_CHUNK_EVENTS == 0;
            group
                .chunks
                .get(
                    self,
                    stream_chunk_key(&envelope.body.stream, version),
                    !opens_chunk,
                )?
                .push_position(envelope.position());
            group.next = Head {
                position: envelope.position(),
                hash: envelope.hash,
            };
        }
        group.commands.extend(record.commands.iter().cloned());
        group.snapshots.extend(record.snapshots.iter().cloned());
        group.results.push(Appended::New {
            first_position: record.first_position(),
            last_position: record.last_position(),
            envelopes: record.envelopes.clone(),
        });
        group.record_sizes.push(record.envelopes.len());
        Ok(())
    }
}
