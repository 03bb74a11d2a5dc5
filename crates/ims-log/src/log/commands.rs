//! The command-id index: for each (command id, actor), where the log records what the first
//! append with them got (the command's last position; its record, with the reply, is in the
//! log's run of command records at or past it). Its entries are packed into runs sorted by id
//! (`log/runs`, tag `b`), so that appends of commands with ids v7 write a key or two to it.
//!
//! It is derived data, kept in a sled database of its own (`commands/` inside the log's folder)
//! behind a watermark, and the log holds what it is derived from: each append writes its command
//! records (under `p` + the last position of the last command, usually one key an append) in its
//! atomic batch. Once the log is durable the index gets the same records and the
//! watermark in one batch of its own, without a flush of its own: after a crash it may lack the
//! last appends, and the first use after opening indexes the records past its watermark again.
//!
//! That batch is written after the append returns, for several appends at once: by
//! [`EventLog::index_pending_commands`], which the region's writer calls once it has answered
//! the group's commands and has no other waiting, or else once [`INDEX_DUE_COMMANDS`] are pending,
//! at the start of an append if nobody did. Until then lookups find the records in memory. The
//! index is not what makes a command durable, the log is, so a reply need not wait for it
//! (`ims-bench --whole-service`: 0.3 ms of every batch when written for each).
//!
//! Why apart: a key per command was most of the log's keys (10M of 12M on a region of 10M
//! events), and sled holds memory and start-up work per page from the moment it opens a
//! database. The writer needs the index; an audit, which opens the log to read events, does not,
//! so the index is opened on first use only. Logs written before kept the index in the log
//! itself (`a` and `c` keys), and indexes written before runs a row per command (`a` keys), which
//! stay read for them.

use std::sync::OnceLock;

use super::runs::{self, Entry, LastRun};
use super::*;

/// Commands per batch when the index catches up with the log.
const CATCH_UP_BATCH_COMMANDS: usize = 10_000;

/// How many unindexed commands make an index write due under load (an append, or the writer
/// with commands waiting, writes them then). Each index batch costs sled a fixed part (a buffer
/// of its log sealed and written, the batch's manifest) that an append's row or two of runs do
/// not outweigh: written for every append, the index was an eighth of the log bench's appends.
/// A crash loses at most these from the index, which the first use after opening indexes again
/// from the log's records.
pub const INDEX_DUE_COMMANDS: usize = 4_096;

/// The index's key of the last position whose command records it holds.
const WATERMARK: &[u8] = b"w";

/// The tag of the index's runs (`log/runs`).
const RUN: u8 = b'b';

/// The index database, opened on first use, and the records durable in the log but not yet in
/// it.
#[derive(Debug, Default)]
pub(super) struct CommandIndex {
    db: OnceLock<sled::Db>,
    /// Whether the index holds rows of releases before runs (a key per command), which lookups
    /// then read too.
    per_command_rows: OnceLock<bool>,
    /// The index's last run, as stored: UUIDs v7 sort after every command indexed before them,
    /// so the lookups of new commands and the index's writes find their run here rather than
    /// in sled.
    last_run: Mutex<LastRun>,
    opening: Mutex<()>,
    unindexed: Mutex<Unindexed>,
}

/// The command records of the last durable groups, until they are in the index.
#[derive(Debug, Default)]
struct Unindexed {
    records: Vec<CommandRecord>,
    /// Where the first record with each command id is in `records` (another actor's use of
    /// the same id, which is rare, is found by a scan).
    by_id: HashMap<[u8; 16], usize>,
    /// The last group's last position: the watermark once they are indexed.
    last_position: u64,
}

impl EventLog {
    /// The index, opened and brought up to the log's command records on first use.
    pub(super) fn command_index(&self) -> Result<&sled::Db, LogError> {
        let index = &self.shared.commands;
        if let Some(db) = index.db.get() {
            return Ok(db);
        }
        let _opening = index.opening.lock().expect("command index lock");
        if let Some(db) = index.db.get() {
            return Ok(db);
        }
        let db = open_sled(
            sled::Config::new()
                .path(self.shared.path.join("commands"))
                .cache_capacity(16 << 20),
        )?;
        let last_run = self.index_records_after_watermark(&db)?;
        *self.last_run() = last_run;
        let per_command_rows = db.scan_prefix([COMMAND]).next().is_some();
        index.per_command_rows.get_or_init(|| per_command_rows);
        Ok(index.db.get_or_init(|| db))
    }

    /// Indexes the command records the log holds past the index's watermark: the appends whose
    /// index batch a crash lost, or all of them for a new (or deleted) index. Returns the
    /// index's last run.
    fn index_records_after_watermark(&self, index: &sled::Db) -> Result<LastRun, LogError> {
        let watermark = last_indexed(index)?;
        let mut last_run = runs::last(index, RUN)?;
        // Bounded batches, each with its watermark: a whole index (one deleted or lost with its
        // disk) is millions of commands.
        let mut pending = Vec::new();
        let mut pending_last = watermark;
        let from = command_records_key(watermark.saturating_add(1));
        for item in self.shared.db.range(from..=command_records_key(u64::MAX)) {
            let (key, value) = item?;
            pending_last = be_u64(&key[1..]);
            let records: Vec<CommandRecord> = codec::decode(&value, || {
                format!("command records at position {pending_last}")
            })?;
            pending.extend(records);
            if pending.len() >= CATCH_UP_BATCH_COMMANDS {
                let records = std::mem::take(&mut pending);
                let (batch, last) = add_to_index(index, &last_run, &records, pending_last)?;
                index.apply_batch(batch)?;
                last_run = last;
            }
        }
        if !pending.is_empty() {
            let (batch, last) = add_to_index(index, &last_run, &pending, pending_last)?;
            index.apply_batch(batch)?;
            last_run = last;
        }
        if last_indexed(index)? > watermark {
            index.flush()?;
        }
        Ok(last_run)
    }

    /// Keeps a durable group's command records for [`EventLog::index_pending_commands`]; lookups
    /// find them here until then.
    pub(super) fn defer_index(&self, records: &mut Vec<CommandRecord>, last_position: u64) {
        if records.is_empty() {
            return;
        }
        let mut unindexed = self.unindexed();
        for record in records.drain(..) {
            let at = unindexed.records.len();
            unindexed.by_id.entry(record.command_id).or_insert(at);
            unindexed.records.push(record);
        }
        unindexed.last_position = last_position;
    }

    /// Writes the command records of the appended groups to the command index, once they are
    /// durable in the log. The region's writer calls this when it has nothing else to do, and
    /// [`EventLog::index_commands_when_due`] otherwise. A failure stops the log, as a failed
    /// append does: the records are in the log, and the index gets them when it is opened again.
    pub fn index_pending_commands(&self) -> Result<(), LogError> {
        // Appends wait: nothing is added to what this writes while it writes it.
        let _appends = self.shared.writer.lock().expect("log writer lock");
        self.index_pending_locked(0)
    }

    /// [`EventLog::index_pending_commands`] once [`INDEX_DUE_COMMANDS`] are pending (appends do
    /// it too, first).
    pub fn index_commands_when_due(&self) -> Result<(), LogError> {
        let _appends = self.shared.writer.lock().expect("log writer lock");
        self.index_pending_locked(INDEX_DUE_COMMANDS)
    }

    /// Writes the pending command records to the index if at least `due` are pending, with the
    /// log's writer lock held.
    pub(super) fn index_pending_locked(&self, due: usize) -> Result<(), LogError> {
        let pending = self.unindexed().records.len();
        if pending == 0 || pending < due {
            return Ok(());
        }
        let written = self.command_index().and_then(|index| {
            let (batch, last_run) = {
                let unindexed = self.unindexed();
                let last_run = self.last_run();
                add_to_index(
                    index,
                    &last_run,
                    &unindexed.records,
                    unindexed.last_position,
                )?
            };
            super::append::failpoint::index()?;
            index.apply_batch(batch)?;
            *self.last_run() = last_run;
            Ok(())
        });
        if let Err(error) = written {
            self.shared.poisoned.store(true, Ordering::Release);
            return Err(error);
        }
        // Removed only now, so that a lookup finds each record here or in the index.
        let mut unindexed = self.unindexed();
        unindexed.records.clear();
        unindexed.by_id.clear();
        Ok(())
    }

    fn last_run(&self) -> std::sync::MutexGuard<'_, LastRun> {
        self.shared
            .commands
            .last_run
            .lock()
            .expect("command index's last run lock")
    }

    fn unindexed(&self) -> std::sync::MutexGuard<'_, Unindexed> {
        self.shared
            .commands
            .unindexed
            .lock()
            .expect("unindexed commands lock")
    }

    /// What the first append of `actor` with `command_id` got, if there was one. Another
    /// actor's use of the same id is not seen.
    pub fn command(
        &self,
        actor: &str,
        command_id: &Uuid,
    ) -> Result<Option<StoredCommand>, LogError> {
        // Here first, then the index: a record leaves here only once the index has it.
        {
            let unindexed = self.unindexed();
            if let Some(&first) = unindexed.by_id.get(command_id.as_bytes()) {
                let found = unindexed.records[first..].iter().find(|record| {
                    record.command_id == *command_id.as_bytes() && record.actor == actor
                });
                if let Some(record) = found {
                    return Ok(Some(record.stored.clone()));
                }
            }
        }
        let index = self.command_index()?;
        let found = runs::find(index, RUN, &self.last_run(), &entry_key(actor, command_id))?;
        if let Some(last_position) = found {
            return self
                .recorded_command(last_position, actor, command_id)
                .map(Some);
        }
        if self.shared.commands.per_command_rows.get() == Some(&true) {
            if let Some(bytes) = index.get(command_key(actor, command_id))? {
                return self.indexed_command(&bytes, actor, command_id).map(Some);
            }
        }
        if !self.shared.legacy_commands {
            return Ok(None);
        }
        if let Some(bytes) = self.shared.db.get(command_key(actor, command_id))? {
            return codec::decode(&bytes, || format!("command record {command_id}")).map(Some);
        }
        let Some(bytes) = self.shared.db.get(unscoped_command_key(command_id))? else {
            return Ok(None);
        };
        let old: UnscopedCommand =
            codec::decode(&bytes, || format!("command record {command_id}"))?;
        // An unscoped record counts only for the actor that its events were recorded for.
        let first = self.read_range(old.first_position, 1)?;
        if first
            .first()
            .is_none_or(|envelope| envelope.body.actor != actor)
        {
            return Ok(None);
        }
        Ok(Some(StoredCommand {
            first_position: old.first_position,
            last_position: old.last_position,
            reply: old.reply,
            digest: None,
        }))
    }

    /// The command a per-command row of releases before runs stands for: a pointer to its
    /// record, or (before the pointer format) the record itself.
    fn indexed_command(
        &self,
        entry: &[u8],
        actor: &str,
        command_id: &Uuid,
    ) -> Result<StoredCommand, LogError> {
        match pointed_position(entry) {
            Some(last_position) => self.recorded_command(last_position, actor, command_id),
            None => codec::decode(entry, || format!("command record {command_id}")),
        }
    }

    /// The record of the command whose last position is `last_position`, read from the log's
    /// run that holds it (the first `p` key at or past that position).
    fn recorded_command(
        &self,
        last_position: u64,
        actor: &str,
        command_id: &Uuid,
    ) -> Result<StoredCommand, LogError> {
        let what = || format!("command record {command_id}");
        let run = self
            .shared
            .db
            .range(command_records_key(last_position)..=command_records_key(u64::MAX))
            .next()
            .transpose()?;
        let records: Vec<CommandRecord> = match &run {
            Some((_, value)) => codec::decode(value, what)?,
            None => Vec::new(),
        };
        records
            .into_iter()
            .find(|record| record.command_id == *command_id.as_bytes() && record.actor == actor)
            .map(|record| record.stored)
            .ok_or_else(|| LogError::Corrupt {
                what: what(),
                reason: format!(
                    "the command index points at position {last_position}, and the log's \
                     command records there do not hold it"
                ),
            })
    }
}

/// The last position of the command of `actor` with `command_id`, if the command index `index`
/// (a closed log's `commands/` opened apart, for tests and tools) holds it.
pub fn indexed_position(
    index: &sled::Db,
    actor: &str,
    command_id: &Uuid,
) -> Result<Option<u64>, LogError> {
    runs::find(
        index,
        RUN,
        &LastRun::default(),
        &entry_key(actor, command_id),
    )
}

/// The key of a command's entry in the index's runs: its id, then its actor.
fn entry_key(actor: &str, command_id: &Uuid) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + actor.len());
    key.extend_from_slice(command_id.as_bytes());
    key.extend_from_slice(actor.as_bytes());
    key
}

/// A per-command row of releases before runs in the pointer format: the command's last
/// position, 8 bytes big-endian. A row of the format before is a whole [`StoredCommand`], at
/// least 25 bytes (two positions, the reply's length and the digest's tag), so the two cannot be
/// confused.
fn pointed_position(entry: &[u8]) -> Option<u64> {
    (entry.len() == 8).then(|| be_u64(entry))
}

/// The watermark: the last position whose command records the index holds.
fn last_indexed(index: &sled::Db) -> Result<u64, LogError> {
    Ok(index
        .get(WATERMARK)?
        .filter(|bytes| bytes.len() == 8)
        .map_or(0, |bytes| be_u64(&bytes)))
}

/// The index's batch that adds `records` with the watermark `last_position`, and its last run
/// once applied. Each record is an entry pointing at its run in the log (the replies are read
/// again only for a retried command).
fn add_to_index(
    index: &sled::Db,
    last_run: &LastRun,
    records: &[CommandRecord],
    last_position: u64,
) -> Result<(sled::Batch, LastRun), LogError> {
    let added = records
        .iter()
        .map(|record| Entry {
            key: entry_key(&record.actor, &Uuid::from_bytes(record.command_id)),
            position: record.stored.last_position,
        })
        .collect();
    let (rows, last_run) = runs::merge(index, RUN, last_run, added)?;
    let mut batch = sled::Batch::default();
    for (key, value) in rows {
        batch.insert(key, value);
    }
    batch.insert(WATERMARK, &last_position.to_be_bytes());
    Ok((batch, last_run))
}

/// Whether the log holds a command index of its own (written before the index moved out).
pub(super) fn has_legacy_commands(db: &sled::Db) -> Result<bool, LogError> {
    Ok(db.scan_prefix([COMMAND]).next().is_some()
        || db.scan_prefix([COMMAND_UNSCOPED]).next().is_some())
}
