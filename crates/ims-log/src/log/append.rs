//! Appending a group: one atomic batch, one flush, one fdatasync, checked before it is written.

use std::time::{Duration, Instant};

use super::*;

/// Where an append's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendTimings {
    /// Checking command ids and versions, sealing the events onto the chain (encode and hash),
    /// building the batch.
    pub seal: Duration,
    /// sled's `apply_batch`: the keys into its tree and its log buffer.
    pub apply: Duration,
    /// sled's `flush`: its log buffer written out (`pwrite`, `sync_file_range`).
    pub flush: Duration,
    /// `fdatasync` of sled's data file: the device has it.
    pub fsync: Duration,
    /// The pending command records into the command index (`log/commands`), when enough are
    /// pending and the log's caller did not write them ([`EventLog::index_pending_commands`]).
    pub index: Duration,
}

/// An append group being built: the head it has reached, what it writes besides the events,
/// and what it has seen.
pub(super) struct Group<'a> {
    pub(super) next: Head,
    stream_versions: HashMap<String, u64>,
    pub(super) chunks: Chunks,
    pub(super) commands: Vec<CommandRecord>,
    pub(super) snapshots: Vec<(Vec<u8>, Vec<u8>)>,
    /// The commands of the group with an id, by (id, actor): their index in `commands`.
    seen_commands: HashMap<(Uuid, &'a str), usize>,
    pub(super) results: Vec<Appended>,
    /// How many events each replicated group holds, when the group is several appended together
    /// (each keeps the records it had on the leader); empty: one group.
    pub(super) record_sizes: Vec<usize>,
}

impl Group<'_> {
    pub(super) fn after(head: Head) -> Self {
        Self {
            next: head,
            stream_versions: HashMap::new(),
            chunks: Chunks::default(),
            commands: Vec::new(),
            snapshots: Vec::new(),
            seen_commands: HashMap::new(),
            results: Vec::new(),
            record_sizes: Vec::new(),
        }
    }

    /// The group as a follower must write it: its events, command records and snapshots.
    fn record(&self) -> GroupRecord {
        GroupRecord {
            envelopes: self.envelopes().cloned().collect(),
            commands: self.commands.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    /// The event records to store: each replicated group's events apart, so that a follower
    /// stores the records its leader did.
    fn records(&self) -> Vec<(u64, Vec<u8>)> {
        if self.record_sizes.is_empty() {
            return encode_records(self.envelopes());
        }
        let envelopes: Vec<&Envelope> = self.envelopes().collect();
        let mut rest = envelopes.as_slice();
        let mut records = Vec::new();
        for &size in &self.record_sizes {
            let (group, after) = rest.split_at(size);
            records.extend(encode_records(group.iter().copied()));
            rest = after;
        }
        records
    }

    fn envelopes(&self) -> impl Iterator<Item = &Envelope> {
        self.results.iter().flat_map(|result| match result {
            Appended::New { envelopes, .. } => envelopes.as_slice(),
            _ => &[],
        })
    }
}

impl EventLog {
    /// Appends a group of commands as one atomic batch, then flushes and syncs once. Returns one
    /// result per command, in order, only once everything written is durable. On `Err`, nothing
    /// of the group may be acknowledged, and the log refuses further appends until reopened.
    pub fn append(&self, commands: &[NewCommand]) -> Result<Vec<Appended>, LogError> {
        self.append_timed(commands).map(|(results, _)| results)
    }

    /// [`EventLog::append`], also saying how long each stage of it took.
    pub fn append_timed(
        &self,
        commands: &[NewCommand],
    ) -> Result<(Vec<Appended>, AppendTimings), LogError> {
        self.append_replicated(commands, None)
    }

    /// [`EventLog::append_timed`] with replication (DESIGN.md section 12): once the group is
    /// sealed and before anything is written here, `replicate` must make it durable elsewhere
    /// and say under which stream sequence; its error leaves nothing written and the log usable.
    pub fn append_replicated(
        &self,
        commands: &[NewCommand],
        replicate: Option<&mut ReplicateFn<'_>>,
    ) -> Result<(Vec<Appended>, AppendTimings), LogError> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
        }
        let started = Instant::now();
        let mut head = self.shared.writer.lock().expect("log writer lock");
        self.index_pending_locked(commands::INDEX_DUE_COMMANDS)?;
        let index = started.elapsed();
        let started = Instant::now();
        let mut group = Group::after(*head);
        for command in commands {
            let result = self.add_command(&mut group, command)?;
            group.results.push(result);
        }
        check_group(*head, group.next, commands.len(), &group.results);
        let mut timings = AppendTimings {
            seal: started.elapsed(),
            index,
            ..AppendTimings::default()
        };
        let next = group.next;
        if next != *head {
            let sequence = match replicate {
                Some(replicate) => Some(replicate(&group.record())?),
                None => None,
            };
            if let Err(error) = self.write_group(&mut group, sequence, &mut timings) {
                self.shared.poisoned.store(true, Ordering::Release);
                return Err(error);
            }
            *head = next;
            self.shared
                .durable_position
                .store(next.position, Ordering::Release);
        }
        Ok((group.results, timings))
    }

    /// What `command` comes to in `group`: the stored reply of an earlier one with its id, a
    /// conflict, or its events sealed onto the chain (with its snapshots and command record put
    /// in the group's batch).
    fn add_command<'a>(
        &self,
        group: &mut Group<'a>,
        command: &'a NewCommand,
    ) -> Result<Appended, LogError> {
        if let Some(id) = command.command_id {
            let earlier = match group.seen_commands.get(&(id, command.actor.as_str())) {
                Some(index) => Some(group.commands[*index].stored.clone()),
                None => self.command(&command.actor, &id)?,
            };
            if let Some(stored) = earlier {
                return Ok(Appended::Duplicate(stored));
            }
        }
        if let Some(conflict) =
            self.first_conflict(command, &mut group.stream_versions, &mut group.chunks)?
        {
            return Ok(conflict);
        }
        let first_position = group.next.position + 1;
        let envelopes = self.seal_events(group, command)?;
        group.snapshots.extend(command.snapshots.iter().cloned());
        if let Some(id) = command.command_id.filter(|_| !envelopes.is_empty()) {
            let stored = StoredCommand {
                first_position,
                last_position: group.next.position,
                reply: command.reply.clone(),
                digest: command.digest,
            };
            group
                .seen_commands
                .insert((id, command.actor.as_str()), group.commands.len());
            group.commands.push(CommandRecord {
                actor: command.actor.clone(),
                command_id: *id.as_bytes(),
                stored,
            });
        }
        Ok(Appended::New {
            first_position,
            last_position: group.next.position,
            envelopes,
        })
    }

    /// Seals `command`'s events onto the chain after `group.next`, noting each in the stream
    /// index.
    fn seal_events(
        &self,
        group: &mut Group<'_>,
        command: &NewCommand,
    ) -> Result<Vec<Envelope>, LogError> {
        let mut envelopes = Vec::with_capacity(command.events.len());
        for event in &command.events {
            let body = EnvelopeBody {
                position: group.next.position + 1,
                event_id: *Uuid::now_v7().as_bytes(),
                stream: event.stream.clone(),
                stream_version: event.stream_version,
                command_id: command.command_id.map(|id| *id.as_bytes()),
                actor: command.actor.clone(),
                region: self.shared.region.clone(),
                recorded_at_ms: command.recorded_at_ms,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                payload: event.payload.clone(),
            };
            let envelope = Envelope::seal(body, group.next.hash);
            // A version that opens a chunk needs no read: the chunk is new.
            let opens_chunk = (event.stream_version - 1) % STREAM_CHUNK_EVENTS == 0;
            let key = stream_chunk_key(&event.stream, event.stream_version);
            group
                .chunks
                .get(self, key, !opens_chunk)?
                .push_position(envelope.position());
            group
                .stream_versions
                .insert(event.stream.clone(), event.stream_version);
            group.next = Head {
                position: envelope.position(),
                hash: envelope.hash,
            };
            envelopes.push(envelope);
        }
        Ok(envelopes)
    }

    /// Writes the group as one batch (its stream chunks, command records, snapshots, event
    /// record, new head and, when replicated, the stream sequence it has), then flushes and
    /// fdatasyncs once; its command records go to the command index later
    /// ([`EventLog::index_pending_commands`]).
    pub(super) fn write_group(
        &self,
        group: &mut Group<'_>,
        sequence: Option<u64>,
        timings: &mut AppendTimings,
    ) -> Result<(), LogError> {
        let db = &self.shared.db;
        let started = Instant::now();
        let mut batch = sled::Batch::default();
        let births =
            self.write_stream_index(std::mem::take(&mut group.chunks).changed(), &mut batch)?;
        for (last_position, run) in encode_command_records(&group.commands) {
            batch.insert(&command_records_key(last_position)[..], run);
        }
        for (key, value) in &group.snapshots {
            batch.insert(snapshot_key(key), value.as_slice());
        }
        for (last_position, record) in group.records() {
            batch.insert(&event_key(last_position)[..], record);
        }
        let mut head_value = group.next.position.to_be_bytes().to_vec();
        head_value.extend_from_slice(&group.next.hash);
        batch.insert(HEAD, head_value);
        if let Some(sequence) = sequence {
            batch.insert(REPLICATED, &sequence.to_be_bytes());
        }
        timings.seal += started.elapsed();
        let started = Instant::now();
        db.apply_batch(batch)?;
        timings.apply = started.elapsed();
        let started = Instant::now();
        db.flush()?;
        timings.flush = started.elapsed();
        let started = Instant::now();
        failpoint::fsync()?;
        self.shared.data_file.sync_data()?;
        timings.fsync = started.elapsed();
        self.births_written(births);
        self.defer_index(&mut group.commands, group.next.position);
        Ok(())
    }

    fn first_conflict(
        &self,
        command: &NewCommand,
        stream_versions: &mut HashMap<String, u64>,
        chunks: &mut Chunks,
    ) -> Result<Option<Appended>, LogError> {
        let mut expected: HashMap<&str, u64> = HashMap::new();
        for event in &command.events {
            let previous = event.stream_version.saturating_sub(1);
            let at_previous = match expected
                .get(event.stream.as_str())
                .or_else(|| stream_versions.get(&event.stream))
            {
                Some(version) => *version == previous,
                None => self.stream_is_at(&event.stream, previous, chunks)?,
            };
            if event.stream_version == 0 || !at_previous {
                let current = match expected
                    .get(event.stream.as_str())
                    .or_else(|| stream_versions.get(&event.stream))
                {
                    Some(version) => *version,
                    None => self.stream_version(&event.stream)?,
                };
                return Ok(Some(Appended::Conflict {
                    stream: event.stream.clone(),
                    expected_version: previous,
                    actual_version: current,
                }));
            }
            expected.insert(&event.stream, event.stream_version);
        }
        Ok(None)
    }

    /// Whether `stream` holds exactly `version` events: one chunk of the stream index read (two
    /// when `version` fills a chunk), cheaper than finding the last chunk with a reverse scan. The
    /// chunks read stay in `chunks` for the append that follows.
    fn stream_is_at(
        &self,
        stream: &str,
        version: u64,
        chunks: &mut Chunks,
    ) -> Result<bool, LogError> {
        if version == 0 && self.stream_is_past_last(stream)? {
            return Ok(true);
        }
        let mut held_with = |version: u64| -> Result<u64, LogError> {
            Ok(chunks
                .get(self, stream_chunk_key(stream, version), true)?
                .len())
        };
        // Chunks fill in order, so the chunk that would take `version + 1` tells it all, unless
        // `version` ends a chunk: then that chunk must be full.
        let in_chunk = version % STREAM_CHUNK_EVENTS;
        if held_with(version + 1)? != in_chunk {
            return Ok(false);
        }
        Ok(in_chunk != 0 || version == 0 || held_with(version)? == STREAM_CHUNK_EVENTS)
    }
}

/// Fault injection (feature `failpoints`, tests only): `IMS_FAILPOINTS=fsync-fails-after=N`
/// makes every fsync after the first N fail, as a dying disk would; `fsync-delay-ms=N` makes
/// each take N ms longer, as a slow one would.
pub(super) mod failpoint {
    /// Fails once `name` (in `IMS_FAILPOINTS`) calls have passed; `done` counts them.
    #[cfg(feature = "failpoints")]
    fn after(name: &str, what: &str, done: &std::sync::atomic::AtomicU64) -> std::io::Result<()> {
        match crate::failpoints::value(name) {
            Some(after) if done.fetch_add(1, std::sync::atomic::Ordering::AcqRel) >= after => Err(
                std::io::Error::other(format!("injected {what} failure (IMS_FAILPOINTS)")),
            ),
            _ => Ok(()),
        }
    }

    #[cfg(feature = "failpoints")]
    pub fn fsync() -> std::io::Result<()> {
        static DONE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if let Some(ms) = crate::failpoints::value("fsync-delay-ms") {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        after("fsync-fails-after", "fsync", &DONE)
    }

    /// The command index's write, once the group is durable in the log.
    #[cfg(feature = "failpoints")]
    pub fn index() -> std::io::Result<()> {
        static DONE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        after("index-fails-after", "command index write", &DONE)
    }

    #[cfg(not(feature = "failpoints"))]
    #[inline(always)]
    pub fn fsync() -> std::io::Result<()> {
        Ok(())
    }

    #[cfg(not(feature = "failpoints"))]
    #[inline(always)]
    pub fn index() -> std::io::Result<()> {
        Ok(())
    }
}
/// The invariants of one append group, checked on every append before anything is written, in
/// TigerBeetle's spirit: one result per command; positions contiguous from the head, each
/// `New` result's range matching its envelopes; the hash chain unbroken from the head's hash;
/// and the group ending exactly at the new head. A broken one panics the writer thread, which
/// stops the process (fail-stop) with nothing of the group on disk.
fn check_group(head: Head, next: Head, commands: usize, results: &[Appended]) {
    assert_eq!(results.len(), commands, "one result per command");
    let mut at = head;
    for result in results {
        let Appended::New {
            first_position,
            last_position,
            envelopes,
        } = result
        else {
            continue;
        };
        assert_eq!(
            *first_position,
            at.position + 1,
            "positions follow the head"
        );
        assert_eq!(
            last_position - first_position + 1,
            envelopes.len() as u64,
            "a command's range holds its envelopes"
        );
        for envelope in envelopes {
            assert_eq!(
                envelope.position(),
                at.position + 1,
                "positions are contiguous"
            );
            assert_eq!(envelope.prev_hash, at.hash, "the hash chain continues");
            at = Head {
                position: envelope.position(),
                hash: envelope.hash,
            };
        }
    }
    assert_eq!(at, next, "the group ends at the new head");
}

#[cfg(test)]
mod group_checks {
    use super::*;

    fn envelope(position: u64, prev_hash: [u8; 32]) -> Envelope {
        test_envelope(position, prev_hash, Vec::new())
    }

    fn group(envelopes: Vec<Envelope>) -> (Head, Vec<Appended>) {
        let last = envelopes.last().unwrap();
        let next = Head {
            position: last.position(),
            hash: last.hash,
        };
        let result = Appended::New {
            first_position: envelopes[0].position(),
            last_position: last.position(),
            envelopes,
        };
        (next, vec![result])
    }

    #[test]
    fn a_group_that_continues_the_head_passes() {
        let head = Head {
            position: 7,
            hash: [9; 32],
        };
        let first = envelope(8, head.hash);
        let second = envelope(9, first.hash);
        let (next, results) = group(vec![first, second]);
        check_group(head, next, 1, &results);
    }

    #[test]
    #[should_panic(expected = "the hash chain continues")]
    fn a_group_that_breaks_the_chain_stops_the_writer() {
        let head = Head {
            position: 7,
            hash: [9; 32],
        };
        let first = envelope(8, head.hash);
        let second = envelope(9, [0; 32]);
        let (next, results) = group(vec![first, second]);
        check_group(head, next, 1, &results);
    }

    #[test]
    #[should_panic(expected = "positions follow the head")]
    fn a_group_that_skips_a_position_stops_the_writer() {
        let head = Head {
            position: 7,
            hash: [9; 32],
        };
        let (next, results) = group(vec![envelope(9, head.hash)]);
        check_group(head, next, 1, &results);
    }
}
