//! The command-id index: for each (command id, actor), where the log records what the first
//! append with them got (the command's last position; its record, with the reply, is in the
//! log's run of command records at or past it). Its entries are packed into runs sorted by id
//! (`log/index_runs`), so that an append of commands with ids v7 writes a key or two to it.
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

use std::ops::Bound;
use std::sync::OnceLock;

use super::index_runs::{self, Entry};
use super::*;

/// Commands per batch when the index catches up with the log.
const CATCH_UP_BATCH_COMMANDS: usize = 10_000;

/// The unindexed commands from which an append, or the writer, writes them to the index. Each
/// index batch costs sled a fixed part (a buffer of its log sealed and written, the batch's
/// manifest) that an append's few runs do not outweigh: the index write was an eighth of the log
/// bench's appends when written for every group. A crash loses at most these, which the first
/// use after opening indexes again from the log's records.
pub const INDEX_DUE_COMMANDS: usize = 4_096;

/// The index's key of the last position whose command records it holds.
const WATERMARK: &[u8] = b"w";

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

/// A run of the index, key and value, if there is one.
type LastRun = Option<(Vec<u8>, Vec<u8>)>;

/// The command records of the last durable groups, until they are in the index.
#[derive(Debug, Default)]
struct Unindexed {
    records: Vec<CommandRecord>,
    /// Where each record is in `records`, by its key in the index of releases before runs
    /// ([`command_key`]).
    by_key: HashMap<Vec<u8>, usize>,
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
        let mut last_run = match index.range(index_runs::all_runs()).next_back() {
            Some(run) => run.map(|(key, value)| Some((key.to_vec(), value.to_vec())))?,
            None => None,
        };
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
            let key = command_key(&record.actor, &Uuid::from_bytes(record.command_id));
            let at = unindexed.records.len();
            unindexed.by_key.insert(key, at);
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
                let last_run = self.last_run().clone();
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
        unindexed.by_key.clear();
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
        let key = command_key(actor, command_id);
        {
            let unindexed = self.unindexed();
            if let Some(&at) = unindexed.by_key.get(&key) {
                return Ok(Some(unindexed.records[at].stored.clone()));
            }
        }
        let index = self.command_index()?;
        let found = {
            let last_run = self.last_run();
            find_indexed(index, &last_run, actor, command_id)?
        };
        if let Some(last_position) = found {
            return self
                .recorded_command(last_position, actor, command_id)
                .map(Some);
        }
        if self.shared.commands.per_command_rows.get() == Some(&true) {
            if let Some(bytes) = index.get(&key)? {
                return self.indexed_command(&bytes, actor, command_id).map(Some);
            }
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
    find_indexed(index, &None, actor, command_id)
}

/// [`indexed_position`], with the index's last run in memory.
fn find_indexed(
    index: &sled::Db,
    last_run: &LastRun,
    actor: &str,
    command_id: &Uuid,
) -> Result<Option<u64>, LogError> {
    let seek = index_runs::run_key(command_id.as_bytes(), actor);
    let find = |key: &[u8], run: &[u8]| index_runs::find_in_run(key, run, command_id, actor);
    if let Some((key, run)) = last_run.as_ref().filter(|(key, _)| *key <= seek) {
        return find(key, run);
    }
    let runs = index_runs::all_runs();
    match index
        .range(runs.start().as_slice()..=seek.as_slice())
        .next_back()
    {
        Some(run) => run
            .map_err(LogError::from)
            .and_then(|(key, run)| find(&key, &run)),
        None => Ok(None),
    }
}

/// The run that holds `seek`'s place (the last at or before it; `None` before every run), and
/// the key of the run after, from `last_run` when `seek` sorts after it.
fn run_of(
    index: &sled::Db,
    last_run: &LastRun,
    seek: &[u8],
) -> Result<(LastRun, Option<sled::IVec>), LogError> {
    if last_run
        .as_ref()
        .is_some_and(|(key, _)| key.as_slice() <= seek)
    {
        return Ok((last_run.clone(), None));
    }
    let runs = index_runs::all_runs();
    let run = match index.range(runs.start().as_slice()..=seek).next_back() {
        Some(run) => run.map(|(key, value)| Some((key.to_vec(), value.to_vec())))?,
        None => None,
    };
    let next = index
        .range::<&[u8], _>((
            Bound::Excluded(seek),
            Bound::Excluded(runs.end().as_slice()),
        ))
        .next()
        .transpose()?
        .map(|(key, _)| key);
    Ok((run, next))
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
/// once applied. Each record is an entry (`log/index_runs`) pointing at its run in the log, merged
/// into the index's run it falls in, read from `index` or `last_run` and written back with them
/// (the replies are read again only for a retried command).
fn add_to_index(
    index: &sled::Db,
    last_run: &LastRun,
    records: &[CommandRecord],
    last_position: u64,
) -> Result<(sled::Batch, LastRun), LogError> {
    let mut added: Vec<Entry> = records
        .iter()
        .map(|record| Entry {
            command_id: record.command_id,
            actor: record.actor.clone(),
            last_position: record.stored.last_position,
        })
        .collect();
    added.sort_unstable();
    let mut added = added.into_iter().peekable();
    let mut batch = sled::Batch::default();
    let mut new_last_run = last_run.clone();
    while let Some(first) = added.peek().cloned() {
        let (run, next_run) = run_of(index, &new_last_run, &first.key())?;
        let mut entries = match &run {
            Some((key, value)) => index_runs::decode_run(key, value)?,
            None => Vec::new(),
        };
        // Ids in order add past the run's last entry (the first added is the least).
        let grew_at_end = entries.last().is_none_or(|last| *last < first);
        while let Some(entry) = added.next_if(|entry| {
            next_run
                .as_ref()
                .is_none_or(|next| entry.key().as_slice() < next.as_ref())
        }) {
            entries.push(entry);
        }
        entries.sort_unstable();
        entries.dedup_by(|a, b| a.command_id == b.command_id && a.actor == b.actor);
        for run in index_runs::split(entries, grew_at_end) {
            let (key, value) = (run[0].key(), index_runs::encode_run(&run));
            batch.insert(key.as_slice(), value.as_slice());
            if new_last_run.as_ref().is_none_or(|(last, _)| *last <= key) {
                new_last_run = Some((key, value));
            }
        }
    }
    batch.insert(WATERMARK, &last_position.to_be_bytes());
    Ok((batch, new_last_run))
}

/// Whether the log holds a command index of its own (written before the index moved out).
pub(super) fn has_legacy_commands(db: &sled::Db) -> Result<bool, LogError> {
    Ok(db.scan_prefix([COMMAND]).next().is_some()
        || db.scan_prefix([COMMAND_UNSCOPED]).next().is_some())
}
