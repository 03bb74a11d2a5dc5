//! Where a read model lives: a sled tree (the service) or a sorted map in memory (rebuilds,
//! audits, benchmarks), and the changes of one batch that are committed to it atomically,
//! together with the checkpoint.

use std::collections::HashMap;

use ims_domain::{Image, ImageId};

use crate::layered::Layered;
use crate::ProjectionError;

/// The key of the checkpoint: the last applied log position (u64 big-endian), then the hash of
/// the event at that position (32 bytes), against which the next event's `prev_hash` is
/// checked. Models written before the hash was kept hold the position alone.
pub const CHECKPOINT_KEY: &[u8] = b"p";

/// One stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The backing store of a read model.
#[derive(Debug)]
pub enum Store {
    Sled(sled::Tree),
    /// Unordered, so that a rebuild pays no key comparisons; scans sort what they match, which
    /// suits the one-off queries of audits. Hashed with foldhash: the keys come from ims's own
    /// log, so SipHash's flooding resistance buys nothing here and cost a quarter of a rebuild.
    Memory(HashMap<Vec<u8>, Vec<u8>, foldhash::fast::RandomState>),
    /// Snapshot files with changes on top (audits as of a past position).
    Layered(Layered),
}

impl Store {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProjectionError> {
        Ok(match self {
            Store::Sled(tree) => tree.get(key)?.map(|v| v.to_vec()),
            Store::Memory(map) => map.get(key).cloned(),
            Store::Layered(layered) => layered.get(key)?,
        })
    }

    /// Keys and values from `start` (inclusive) while they start with `prefix`, in key order.
    pub fn scan_from<'a>(
        &'a self,
        prefix: &'a [u8],
        start: Vec<u8>,
    ) -> Box<dyn Iterator<Item = Result<Entry, ProjectionError>> + 'a> {
        match self {
            Store::Sled(tree) => Box::new(
                tree.range(start..)
                    .map(|item| {
                        item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                            .map_err(ProjectionError::from)
                    })
                    .take_while(move |item| {
                        item.as_ref().map_or(true, |(k, _)| k.starts_with(prefix))
                    }),
            ),
            Store::Memory(map) => {
                let mut matched: Vec<Entry> = map
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix) && k.as_slice() >= start.as_slice())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                matched.sort_unstable();
                Box::new(matched.into_iter().map(Ok))
            }
            Store::Layered(layered) => Box::new(layered.scan_from(prefix, start)),
        }
    }

    /// Every key and value, in key order: what a byte-for-byte comparison reads.
    pub fn entries(&self) -> Result<Vec<Entry>, ProjectionError> {
        self.scan_from(b"", Vec::new()).collect()
    }

    pub fn checkpoint(&self) -> Result<u64, ProjectionError> {
        Ok(self.get(CHECKPOINT_KEY)?.map_or(0, |bytes| be_u64(&bytes)))
    }

    /// The hash of the last applied event: zeros before the first, `None` when the model was
    /// written before hashes were kept (the chain is then checked from the next event on).
    pub fn checkpoint_hash(&self) -> Result<Option<[u8; 32]>, ProjectionError> {
        Ok(match self.get(CHECKPOINT_KEY)? {
            None => Some([0; 32]),
            Some(bytes) => bytes.get(8..40).and_then(|hash| hash.try_into().ok()),
        })
    }
}

pub fn be_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(buf)
}

/// The changes of one batch of events: decoded images (each encoded once at commit) and raw key
/// changes in the order they were made (`None` deletes; a later change to a key wins). Folds only
/// write keys other than image records, so the key changes need no lookup structure.
#[derive(Debug, Default)]
pub struct Changes {
    images: HashMap<ImageId, Option<Image>, foldhash::fast::RandomState>,
    keys: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// The key of an image record.
pub fn image_key(id: &ImageId) -> [u8; 17] {
    let mut key = [b'i'; 17];
    key[1..].copy_from_slice(id.as_bytes());
    key
}

impl Changes {
    /// The image as of the changes so far, loading it from `store` on first use.
    pub fn image(
        &mut self,
        store: &Store,
        id: ImageId,
    ) -> Result<Option<&mut Image>, ProjectionError> {
        if let std::collections::hash_map::Entry::Vacant(vacant) = self.images.entry(id) {
            let loaded = match store.get(&image_key(&id))? {
                Some(bytes) => Some(ims_log::decode::<Image>(&bytes, || {
                    format!("read model record of image {id}")
                })?),
                None => None,
            };
            vacant.insert(loaded);
        }
        Ok(self.images.get_mut(&id).and_then(Option::as_mut))
    }

    pub fn put_image(&mut self, image: Image) {
        self.images.insert(image.id, Some(image));
    }

    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.keys.push((key, Some(value)));
    }

    pub fn remove(&mut self, key: Vec<u8>) {
        self.keys.push((key, None));
    }

    /// The keys these changes write, the checkpoint's included.
    pub fn touched(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.keys
            .iter()
            .map(|(key, _)| key.clone())
            .chain(self.images.keys().map(|id| image_key(id).to_vec()))
            .chain(std::iter::once(CHECKPOINT_KEY.to_vec()))
    }

    /// Writes everything and the new checkpoint in one atomic batch.
    pub fn commit(
        self,
        store: &mut Store,
        checkpoint: u64,
        checkpoint_hash: [u8; 32],
    ) -> Result<(), ProjectionError> {
        let mut keys = self.keys;
        for (id, image) in self.images {
            keys.push((
                image_key(&id).to_vec(),
                image.map(|image| ims_log::encode(&image)),
            ));
        }
        let mut value = checkpoint.to_be_bytes().to_vec();
        value.extend_from_slice(&checkpoint_hash);
        keys.push((CHECKPOINT_KEY.to_vec(), Some(value)));
        match store {
            Store::Sled(tree) => {
                let mut batch = sled::Batch::default();
                for (key, value) in keys {
                    match value {
                        Some(value) => batch.insert(key, value),
                        None => batch.remove(key),
                    }
                }
                tree.apply_batch(batch)?;
            }
            Store::Layered(layered) => {
                for (key, value) in keys {
                    layered.write(key, value);
                }
                layered.spill_if_full()?;
            }
            Store::Memory(map) => {
                map.reserve(keys.len());
                for (key, value) in keys {
                    match value {
                        Some(value) => map.insert(key, value),
                        None => map.remove(&key),
                    };
                }
            }
        }
        Ok(())
    }
}
