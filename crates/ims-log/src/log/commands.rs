//! The command-id index: for each (command id, actor), where the log records what the first
//! append with them got (the command's last position; its record, with the reply, is in the
//! log's run of command records at or past it).
//!
//! It is derived data, kept in a sled database of its own (`commands/` inside the log's folder)
//! behind a watermark, and the log holds what it is derived from: each append writes its command
//! records (under `p` + the last position of the last command, usually one key an append) in its
//! atomic batch. Once the log is durable the index gets the same records and the
//! watermark in one batch of its own, without a flush of its own: after a crash it may lack the
//! last appends, and the first use after opening indexes the records past its watermark again.
//!
//! That batch is written after the append returns: by [`EventLog::index_pending_commands`], which
//! the region's writer calls once it has answered the group's commands, or else at the start of
//! the next append. Until then lookups find the group's records in memory. The index is not what
//! makes a command durable, the log is, so a reply need not wait for it (`ims-bench
//! --whole-service`: 0.3 ms of every batch).
//!
//! Why apart: a key per command was most of the log's keys (10M of 12M on a region of 10M
//! events), and sled holds memory and start-up work per page from the moment it opens a
//! database. The writer needs the index; an audit, which opens the log to read events, does not,
//! so the index is opened on first use only. Logs written before kept the index in the log
//! itself (`a` and `c` keys), which stays read for them.

use std::sync::OnceLock;

use super::*;

/// Commands per batch when the index catches up with the log.
const CATCH_UP_BATCH_COMMANDS: usize = 10_000;

/// The index's key of the last position whose command records it holds.
const WATERMARK: &[u8] = b"w";

/// The index database, opened on first use, and the records durable in the log but not yet in
/// it.
#[derive(Debug, Default)]
pub(super) struct CommandIndex {
    db: OnceLock<sled::Db>,
    opening: Mutex<()>,
    unindexed: Mutex<Unindexed>,
}

/// The command records of the last durable group, until they are in the index.
#[derive(Debug, Default)]
struct Unindexed {
    records: Vec<CommandRecord>,
    /// The group's last position: the watermark once they are indexed.
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
        self.index_records_after_watermark(&db)?;
        Ok(index.db.get_or_init(|| db))
    }

    /// Indexes the command records the log holds past the index's watermark: the appends whose
    /// index batch a crash lost, or all of them for a new (or deleted) index.
    fn index_records_after_watermark(&self, index: &sled::Db) -> Result<(), LogError> {
        let watermark = last_indexed(index)?;
        // Bounded batches, each with its watermark: a whole index (one deleted or lost with its
        // disk) is millions of commands.
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        let from = command_records_key(watermark.saturating_add(1));
        for item in self.shared.db.range(from..=command_records_key(u64::MAX)) {
            let (key, value) = item?;
            let last = be_u64(&key[1..]);
            let records: Vec<CommandRecord> =
                codec::decode(&value, || format!("command records at position {last}"))?;
            add_to_index(&mut batch, &records, last);
            in_batch += records.len();
            if in_batch >= CATCH_UP_BATCH_COMMANDS {
                index.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            index.apply_batch(batch)?;
        }
        if last_indexed(index)? > watermark {
            index.flush()?;
        }
        Ok(())
    }

    /// Keeps a durable group's command records for [`EventLog::index_pending_commands`]; lookups
    /// find them here until then.
    pub(super) fn defer_index(&self, records: &mut Vec<CommandRecord>, last_position: u64) {
        if records.is_empty() {
            return;
        }
        let mut unindexed = self.unindexed();
        unindexed.records.append(records);
        unindexed.last_position = last_position;
    }

    /// Writes the command records of the last appended group to the command index, once it is
    /// durable in the log. The region's writer calls this after answering the group; an append
    /// does it first when nobody did. A failure stops the log, as a failed append does: the
    /// records are in the log, and the index gets them when it is opened again.
    pub fn index_pending_commands(&self) -> Result<(), LogError> {
        // Appends wait: nothing is added to what this writes while it writes it.
        let _appends = self.shared.writer.lock().expect("log writer lock");
        self.index_pending_locked()
    }

    /// [`EventLog::index_pending_commands`] with the log's writer lock held.
    pub(super) fn index_pending_locked(&self) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        {
            let unindexed = self.unindexed();
            if unindexed.records.is_empty() {
                return Ok(());
            }
            add_to_index(&mut batch, &unindexed.records, unindexed.last_position);
        }
        let written = self.command_index().and_then(|index| {
            super::append::failpoint::index()?;
            Ok(index.apply_batch(batch)?)
        });
        if let Err(error) = written {
            self.shared.poisoned.store(true, Ordering::Release);
            return Err(error);
        }
        // Removed only now, so that a lookup finds each record here or in the index.
        self.unindexed().records.clear();
        Ok(())
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
        let unindexed = self.unindexed().records.iter().find_map(|record| {
            (record.command_id == *command_id.as_bytes() && record.actor == actor)
                .then(|| record.stored.clone())
        });
        if unindexed.is_some() {
            return Ok(unindexed);
        }
        let key = command_key(actor, command_id);
        if let Some(bytes) = self.command_index()?.get(&key)? {
            return self.indexed_command(&bytes, actor, command_id).map(Some);
        }
        if !self.shared.legacy_commands {
            return Ok(None);
        }
        if let Some(bytes) = self.shared.db.get(&key)? {
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

    /// The command an index entry stands for: since the pointer format, the record itself is
    /// read from the log's run that holds it (the first `p` key at or past the command's last
    /// position); before, the entry held the record.
    fn indexed_command(
        &self,
        entry: &[u8],
        actor: &str,
        command_id: &Uuid,
    ) -> Result<StoredCommand, LogError> {
        let what = || format!("command record {command_id}");
        let Some(last_position) = pointed_position(entry) else {
            return codec::decode(entry, what);
        };
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

/// An index entry in the pointer format: the command's last position, 8 bytes big-endian. An
/// entry of the format before is a whole [`StoredCommand`], at least 25 bytes (two positions,
/// the reply's length and the digest's tag), so the two cannot be confused.
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

/// Puts `records` in the index's `batch`, each as a pointer to its run in the log (see
/// [`pointed_position`]): a row of about 40 bytes instead of one with the reply, so a leaf holds
/// twice the rows and an append splits half as many (the replies are read again only for a
/// retried command).
fn add_to_index(batch: &mut sled::Batch, records: &[CommandRecord], last_position: u64) {
    for record in records {
        let id = Uuid::from_bytes(record.command_id);
        batch.insert(
            command_key(&record.actor, &id),
            &record.stored.last_position.to_be_bytes(),
        );
    }
    batch.insert(WATERMARK, &last_position.to_be_bytes());
}

/// Whether the log holds a command index of its own (written before the index moved out).
pub(super) fn has_legacy_commands(db: &sled::Db) -> Result<bool, LogError> {
    Ok(db.scan_prefix([COMMAND]).next().is_some()
        || db.scan_prefix([COMMAND_UNSCOPED]).next().is_some())
}
